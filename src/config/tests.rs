use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

#[test]
fn durations_go_through_serde() {
    let json = serde_json::to_string(&GoDuration::from_secs(90)).expect("serialize");
    assert_eq!(json, "\"1m30s\"");
    let back: GoDuration = serde_json::from_str("\"1h2m3.5s\"").expect("deserialize");
    assert_eq!(back.0, Duration::from_millis(3_723_500));
    assert!(serde_json::from_str::<GoDuration>("\"-1s\"").is_err());
    assert_eq!(
        "-1s".parse::<GoDuration>(),
        Err(DurationError::Negative("-1s".to_owned()))
    );
}

const MINIMAL: &str = r#"{"consensus": {"crdt": {}}}"#;

#[test]
fn a_minimal_file_gets_defaults_and_no_optional_components() {
    let loaded = Config::from_json(MINIMAL).expect("load");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.consensus.crdt, CrdtConfig::default());
    assert_eq!(c.api.restapi, None);
    assert_eq!(c.informer.disk, None);
    assert_eq!(c.allocator.balanced.allocate_by, vec!["freespace"]);
}

#[test]
fn zero_and_empty_keep_defaults_where_the_reference_does() {
    let loaded = Config::from_json(
        r#"{
          "cluster": {"replication_factor_min": 0, "peername": "", "mdns_interval": "0s"},
          "consensus": {"crdt": {"batching": {"max_batch_size": 0, "max_batch_age": "0s"}}},
          "api": {"restapi": {"max_header_bytes": 0, "http_listen_multiaddress": []}}
        }"#,
    )
    .expect("load");
    let c = loaded.config;
    assert_eq!(c.cluster.replication_factor_min, -1);
    assert!(!c.cluster.peername.is_empty());
    // "0s" is a value: it disables mDNS.
    assert_eq!(c.cluster.mdns_interval, GoDuration::ZERO);
    assert_eq!(c.consensus.crdt.batching, Batching::default());
    let rest = c.api.restapi.expect("restapi present");
    assert_eq!(rest.max_header_bytes, 4096);
    assert_eq!(
        rest.http_listen_multiaddress,
        RestApiConfig::restapi_default().http_listen_multiaddress
    );
}

#[test]
fn absent_cors_keys_get_the_library_defaults() {
    let c = Config::from_json(r#"{"consensus": {"crdt": {}}, "api": {"restapi": {}}}"#)
        .expect("load")
        .config;
    let rest = c.api.restapi.expect("restapi");
    assert_eq!(rest.cors_allowed_methods, vec!["GET", "POST", "HEAD"]);
    assert!(rest.cors_exposed_headers.is_empty());
    assert!(!rest.cors_allow_credentials);
    assert_eq!(rest.basic_auth_credentials, None);
}

#[test]
fn quic_listen_addresses_are_dropped_with_a_warning() {
    let loaded = Config::from_json(
        r#"{"cluster": {"listen_multiaddress": ["/ip4/0.0.0.0/tcp/9096", "/ip4/0.0.0.0/udp/9096/quic"]},
            "consensus": {"crdt": {}}}"#,
    )
    .expect("load");
    assert_eq!(loaded.config.cluster.listen_multiaddress.len(), 1);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("cluster.listen_multiaddress"));
}

#[test]
fn unix_socket_addresses_keep_their_path_and_shape() {
    let c = Config::from_json(
        r#"{"consensus": {"crdt": {}},
            "api": {"restapi": {"http_listen_multiaddress": "/unix/run/pc/api.sock"},
                    "ipfsproxy": {"listen_multiaddress": ["/ip4/127.0.0.1/tcp/9095", "/unix/tmp/p.sock"]}}}"#,
    )
    .expect("load")
    .config;
    let rest = serde_json::to_value(c.api.restapi.expect("restapi")).expect("serialize");
    assert_eq!(rest["http_listen_multiaddress"], "/unix/run/pc/api.sock");
    let proxy = serde_json::to_value(c.api.ipfsproxy.expect("proxy")).expect("serialize");
    assert_eq!(
        proxy["listen_multiaddress"],
        serde_json::json!(["/ip4/127.0.0.1/tcp/9095", "/unix/tmp/p.sock"])
    );
}

#[test]
fn raft_is_refused_by_name() {
    let err = Config::from_json(r#"{"consensus": {"raft": {}}}"#).expect_err("raft");
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "consensus.raft"),
        "{err}"
    );
    assert!(err.to_string().contains("not supported"), "{err}");
    let err = Config::from_json(r#"{"consensus": {}}"#).expect_err("no crdt");
    assert!(err.to_string().starts_with("consensus.crdt"), "{err}");
}

#[test]
fn trusted_peers_star_anywhere_means_all_and_bad_ids_are_named() {
    let id = PeerId::random();
    let json = format!(r#"{{"consensus": {{"crdt": {{"trusted_peers": ["{id}", "*"]}}}}}}"#);
    let c = Config::from_json(&json).expect("load").config;
    assert_eq!(c.consensus.crdt.trusted_peers, TrustedPeers::All);

    let json = format!(r#"{{"consensus": {{"crdt": {{"trusted_peers": ["{id}", "nope"]}}}}}}"#);
    let err = Config::from_json(&json).expect_err("bad id");
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "consensus.crdt.trusted_peers[1]"),
        "{err}"
    );

    let only = TrustedPeers::Only(vec![id]);
    assert!(only.is_trusted(&id));
    assert!(!only.is_trusted(&PeerId::random()));
}

#[test]
fn secrets_must_be_32_bytes_of_hex() {
    let err = Config::from_json(r#"{"cluster": {"secret": "abcd"}, "consensus": {"crdt": {}}}"#)
        .expect_err("short");
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "cluster.secret"),
        "{err}"
    );
    let good = "ab".repeat(32);
    let json = format!(r#"{{"cluster": {{"secret": "{good}"}}, "consensus": {{"crdt": {{}}}}}}"#);
    let c = Config::from_json(&json).expect("load").config;
    assert_eq!(c.cluster.secret, Some([0xab; 32]));
    assert!(
        !format!("{:?}", c.cluster).contains("171"),
        "secret leaked into Debug"
    );
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let err = Config::from_json("{\n  \"cluster\": {,\n}").expect_err("syntax");
    match err {
        ConfigError::Syntax { line, column, .. } => assert_eq!((line, column), (2, 15)),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn a_wrong_type_names_the_key() {
    let err = Config::from_json(
        r#"{"cluster": {"pubsub": {"d_factor": "four"}}, "consensus": {"crdt": {}}}"#,
    )
    .expect_err("type");
    assert_eq!(
        err.to_string(),
        "cluster.pubsub.d_factor: expected an integer from 0 to 4294967295, found string \"four\""
    );
}

#[test]
fn env_lists_maps_and_booleans() {
    let mut c = Config::new_default();
    let env = BTreeMap::from([
        ("CLUSTER_FOLLOWERMODE", "true"),
        ("CLUSTER_TAGS_TAGS", "group:edge, region:eu"),
        ("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS", "alice:pw1,bob:pw:2"),
        ("CLUSTER_CONNECTIONMANAGER_HIGHWATER", "500"),
        ("CLUSTER_FJALL_DURABILITY", "sync"),
    ]);
    c.apply_env(|var| env.get(var).map(|v| v.to_string()))
        .expect("env");
    assert!(c.cluster.follower_mode);
    let tags = &c.informer.tags.as_ref().expect("tags").tags;
    assert_eq!(tags.get("region").map(String::as_str), Some("eu"));
    let creds = c
        .api
        .restapi
        .as_ref()
        .and_then(|r| r.basic_auth_credentials.clone());
    let creds = creds.expect("credentials");
    assert_eq!(creds.get("bob").map(String::as_str), Some("pw:2"));
    assert_eq!(c.cluster.connection_manager.high_water, 500);
    assert_eq!(c.datastore.fjall.durability, Durability::Sync);
    c.validate().expect("valid");
}

#[test]
fn env_errors_name_the_variable() {
    let mut c = Config::new_default();
    let err = c
        .apply_env(|var| (var == "CLUSTER_FOLLOWERMODE").then(|| "maybe".to_string()))
        .expect_err("bool");
    assert!(
        matches!(&err, ConfigError::Env { var, .. } if var == "CLUSTER_FOLLOWERMODE"),
        "{err}"
    );
    let err = c
        .apply_env(|var| (var == "CLUSTER_CRDT_TRUSTEDPEERS").then(|| "x,y".to_string()))
        .expect_err("peer ids");
    assert!(
        matches!(&err, ConfigError::Env { var, problem } if var == "CLUSTER_CRDT_TRUSTEDPEERS"
            && problem.starts_with("consensus.crdt.trusted_peers[0]")),
        "{err}"
    );
}

#[test]
fn init_honours_cluster_secret_from_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = "01".repeat(32);
    let opts = InitOptions {
        force: false,
        peername: Some("p1".to_string()),
        secret: SecretChoice::Generate,
        peers: Vec::new(),
        ipfs: IpfsChoice::Kubo,
    };
    init_folder_with_env(dir.path(), &opts, |var| {
        (var == "CLUSTER_SECRET").then(|| secret.clone())
    })
    .expect("init");
    let c = Config::from_json(&fs::read_to_string(dir.path().join(SERVICE_FILE)).expect("read"))
        .expect("load")
        .config;
    assert_eq!(c.cluster.secret, Some([1; 32]));
    assert_eq!(c.cluster.peername, "p1");
}
