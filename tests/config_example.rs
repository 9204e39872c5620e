//! `config.example.json` must stay true: it loads without a warning and
//! holds exactly the defaults. Plus the loading rules a user meets first:
//! errors that name the key, warnings for unknown keys, environment
//! overrides, `init`, and identity files.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use pincluster::config::*;
use pincluster::identity::{IDENTITY_FILE, Identity, IdentityError};

const EXAMPLE: &str = include_str!("../config.example.json");

/// Smallest valid file: everything else takes its default.
const MINIMAL: &str = r#"{"consensus": {"crdt": {}}}"#;

fn load(text: &str) -> Loaded {
    Config::from_json(text).unwrap_or_else(|e| panic!("config should load: {e}"))
}

fn invalid_key(err: &ConfigError) -> &str {
    match err {
        ConfigError::Invalid { key, .. } => key,
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |var| map.get(var).cloned()
}

fn addr(text: &str) -> Multiaddr {
    text.parse().expect("test multiaddr")
}

#[test]
fn the_example_loads_without_warnings_and_holds_the_defaults() {
    let loaded = load(EXAMPLE);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let mut config = loaded.config;
    let default = Config::new_default();
    config.cluster.peername = default.cluster.peername.clone();
    config.cluster.secret = default.cluster.secret;
    assert_eq!(config, default);
}

#[test]
fn the_example_documents_every_key_that_init_writes() {
    // Every key of the written defaults appears in the example (the reverse
    // holds by the equality test above: unknown keys would warn).
    fn keys(value: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                if k == "//" || k == "tags" || k == "headers" {
                    continue;
                }
                let p = format!("{path}.{k}");
                out.push(p.clone());
                keys(v, &p, out);
            }
        }
    }
    let written: serde_json::Value =
        serde_json::from_str(&Config::new_default().to_json_pretty()).expect("json");
    let example: serde_json::Value = serde_json::from_str(EXAMPLE).expect("json");
    let (mut w, mut e) = (Vec::new(), Vec::new());
    keys(&written, "", &mut w);
    keys(&example, "", &mut e);
    let missing: Vec<_> = w.iter().filter(|k| !e.contains(k)).collect();
    assert!(missing.is_empty(), "undocumented keys: {missing:?}");
}

#[test]
fn a_bad_duration_names_its_key() {
    let err = Config::from_json(
        r#"{"cluster": {"monitor_ping_interval": "15 seconds"}, "consensus": {"crdt": {}}}"#,
    )
    .expect_err("bad duration");
    assert_eq!(invalid_key(&err), "cluster.monitor_ping_interval");
    assert!(
        err.to_string()
            .starts_with("cluster.monitor_ping_interval: "),
        "{err}"
    );
}

#[test]
fn low_water_above_high_water_is_refused() {
    let err = Config::from_json(
        r#"{"cluster": {"connection_manager": {"high_water": 10, "low_water": 20}},
            "consensus": {"crdt": {}}}"#,
    )
    .expect_err("low > high");
    assert_eq!(invalid_key(&err), "cluster.connection_manager.low_water");
}

#[test]
fn validation_rules_name_their_keys() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"cluster": {"replication_factor_min": 3, "replication_factor_max": 2}}"#,
            "cluster.replication_factor_min",
        ),
        (
            r#"{"cluster": {"replication_factor_min": -1, "replication_factor_max": 2}}"#,
            "cluster.replication_factor_min",
        ),
        (
            r#"{"cluster": {"pin_only_on_trusted_peers": true, "pin_only_on_untrusted_peers": true}}"#,
            "cluster.pin_only_on_untrusted_peers",
        ),
        (
            r#"{"cluster": {"listen_multiaddress": []}}"#,
            "cluster.listen_multiaddress",
        ),
        (
            r#"{"cluster": {"listen_multiaddress": "/ip4/nope"}}"#,
            "cluster.listen_multiaddress",
        ),
        (
            r#"{"cluster": {"peer_addresses": ["/ip4/1.2.3.4/tcp/9096"]}}"#,
            "cluster.peer_addresses[0]",
        ),
        (
            r#"{"cluster": {"state_sync_interval": "0s"}}"#,
            "cluster.state_sync_interval",
        ),
        (
            r#"{"api": {"restapi": {"max_header_bytes": 100}}}"#,
            "api.restapi.max_header_bytes",
        ),
        (
            r#"{"api": {"restapi": {"basic_auth_credentials": {}}}}"#,
            "api.restapi.basic_auth_credentials",
        ),
        (
            r#"{"api": {"restapi": {"ssl_cert_file": "cert.pem"}}}"#,
            "api.restapi.ssl_key_file",
        ),
        (
            r#"{"api": {"ipfsproxy": {"max_header_bytes": 1000}}}"#,
            "api.ipfsproxy.max_header_bytes",
        ),
        (
            r#"{"informer": {"disk": {"metric_type": "bogus"}}}"#,
            "informer.disk.metric_type",
        ),
        (
            r#"{"datastore": {"fjall": {"durability": "eventually"}}}"#,
            "datastore.fjall.durability",
        ),
    ];
    for (section, key) in cases {
        // Splice the case's sections next to a valid consensus section.
        let json = format!(r#"{{"consensus": {{"crdt": {{}}}}, {}"#, &section[1..]);
        let err = Config::from_json(&json).expect_err(section);
        assert_eq!(invalid_key(&err), *key, "{section}: {err}");
    }
}

#[test]
fn cluster_name_cannot_be_empty() {
    let mut config = Config::new_default();
    config.consensus.crdt.cluster_name.clear();
    let err = config.validate().expect_err("empty name");
    assert_eq!(invalid_key(&err), "consensus.crdt.cluster_name");
}

#[test]
fn unknown_keys_warn_with_their_path_and_comments_are_silent() {
    let loaded = load(
        r#"{
          "//": "a comment",
          "frobnicate": 1,
          "cluster": {"//": ["also a comment"], "replication_factor": 2,
                      "connection_manager": {"//": 1, "typo_water": 1}},
          "consensus": {"crdt": {"//": {"nested": "comment"}}},
          "monitor": {"monbasic": {"check_interval": "15s"}},
          "datastore": {"pebble": {"pebble_options": {}}}
        }"#,
    );
    let w = loaded.warnings.join("\n");
    for expected in [
        "unknown key frobnicate ignored",
        "unknown key cluster.replication_factor ignored",
        "unknown key cluster.connection_manager.typo_water ignored",
        "unknown key monitor.monbasic ignored",
        "datastore.pebble ignored",
    ] {
        assert!(w.contains(expected), "missing {expected:?} in:\n{w}");
    }
    assert_eq!(loaded.warnings.len(), 5, "{w}");
}

#[test]
fn absent_components_are_off() {
    let config = load(MINIMAL).config;
    assert_eq!(config.api.restapi, None);
    assert_eq!(config.api.ipfsproxy, None);
    assert_eq!(config.api.pinsvcapi, None);
    assert_eq!(config.informer.disk, None);
    assert_eq!(config.informer.tags, None);
    assert_eq!(config.informer.pinqueue, None);
    assert_eq!(config.allocator.balanced.allocate_by, vec!["freespace"]);

    let config = load(r#"{"consensus": {"crdt": {}}, "api": {"ipfsproxy": {}}}"#).config;
    assert_eq!(config.api.ipfsproxy, Some(IpfsProxyConfig::default()));
    assert_eq!(config.api.restapi, None);
}

#[test]
fn env_overrides_apply_on_top_of_the_file() {
    let mut config = Config::new_default();
    let peer = PeerId::random();
    let secret = "ab".repeat(32);
    let peers = format!("{peer}");
    config
        .apply_env(env(&[
            ("CLUSTER_PEERNAME", "from-env"),
            ("CLUSTER_SECRET", &secret),
            (
                "CLUSTER_LISTENMULTIADDRESS",
                "/ip4/0.0.0.0/tcp/1,/ip6/::/tcp/1",
            ),
            ("CLUSTER_FOLLOWERMODE", "true"),
            ("CLUSTER_REPLICATIONFACTORMIN", "2"),
            ("CLUSTER_REPLICATIONFACTORMAX", "3"),
            ("CLUSTER_MONITORPINGINTERVAL", "2s"),
            (
                "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS",
                "/ip4/0.0.0.0/tcp/8094",
            ),
            (
                "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS",
                "user:pass,user2:pass2",
            ),
            (
                "CLUSTER_IPFSPROXY_LISTENMULTIADDRESS",
                "/ip4/0.0.0.0/tcp/8095",
            ),
            ("CLUSTER_IPFSPROXY_NODEMULTIADDRESS", "/dns4/ipfs/tcp/5001"),
            ("CLUSTER_IPFSHTTP_NODEMULTIADDRESS", "/dns4/ipfs/tcp/5001"),
            ("CLUSTER_CRDT_CLUSTERNAME", "other"),
            ("CLUSTER_CRDT_TRUSTEDPEERS", &peers),
            ("CLUSTER_CRDT_REBROADCASTINTERVAL", "10s"),
            ("CLUSTER_CRDT_BATCHING_MAXBATCHSIZE", "10"),
            ("CLUSTER_CRDT_BATCHING_MAXBATCHAGE", "1s"),
            ("CLUSTER_TAGS_TAGS", "group:edge,region:eu"),
        ]))
        .expect("env applies");
    config.validate().expect("still valid");

    let c = &config.cluster;
    assert_eq!(c.peername, "from-env");
    assert_eq!(c.secret, Some([0xab; 32]));
    assert_eq!(
        c.listen_multiaddress,
        vec![addr("/ip4/0.0.0.0/tcp/1"), addr("/ip6/::/tcp/1")]
    );
    assert!(c.follower_mode);
    assert_eq!((c.replication_factor_min, c.replication_factor_max), (2, 3));
    assert_eq!(c.monitor_ping_interval.0, Duration::from_secs(2));

    let rest = config.api.restapi.as_ref().expect("restapi");
    assert_eq!(
        rest.http_listen_multiaddress,
        vec![addr("/ip4/0.0.0.0/tcp/8094")]
    );
    let creds = rest.basic_auth_credentials.as_ref().expect("credentials");
    assert_eq!(creds.get("user2").map(String::as_str), Some("pass2"));
    let proxy = config.api.ipfsproxy.as_ref().expect("proxy");
    assert_eq!(
        proxy.listen_multiaddress,
        vec![addr("/ip4/0.0.0.0/tcp/8095")]
    );
    assert_eq!(proxy.node_multiaddress, addr("/dns4/ipfs/tcp/5001"));
    assert_eq!(
        config.ipfs_connector.ipfshttp.node_multiaddress,
        addr("/dns4/ipfs/tcp/5001")
    );

    let crdt = &config.consensus.crdt;
    assert_eq!(crdt.cluster_name, "other");
    assert_eq!(crdt.trusted_peers, TrustedPeers::Only(vec![peer]));
    assert_eq!(crdt.rebroadcast_interval.0, Duration::from_secs(10));
    assert_eq!(crdt.batching.max_batch_size, 10);
    assert_eq!(crdt.batching.max_batch_age.0, Duration::from_secs(1));

    let tags = &config.informer.tags.as_ref().expect("tags").tags;
    assert_eq!(tags.len(), 2);
    assert_eq!(tags.get("region").map(String::as_str), Some("eu"));
}

#[test]
fn env_does_not_create_absent_components() {
    let mut config = load(MINIMAL).config;
    config
        .apply_env(env(&[
            (
                "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS",
                "/ip4/0.0.0.0/tcp/8094",
            ),
            ("CLUSTER_TAGS_TAGS", "group:edge"),
        ]))
        .expect("env applies");
    assert_eq!(config.api.restapi, None);
    assert_eq!(config.informer.tags, None);
}

#[test]
fn a_bad_env_value_names_the_variable() {
    for (var, value) in [
        ("CLUSTER_MONITORPINGINTERVAL", "soon"),
        ("CLUSTER_REPLICATIONFACTORMIN", "two"),
        ("CLUSTER_LISTENMULTIADDRESS", "/ip4/0.0.0.0/tcp/1,nope"),
        ("CLUSTER_SECRET", "abcd"),
        ("CLUSTER_TAGS_TAGS", "no-colon"),
    ] {
        let mut config = Config::new_default();
        let err = config
            .apply_env(env(&[(var, value)]))
            .expect_err("bad value");
        match &err {
            ConfigError::Env { var: named, .. } => assert_eq!(named, var, "{err}"),
            other => panic!("{var}: expected an Env error, got {other:?}"),
        }
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[test]
fn to_json_pretty_round_trips() {
    let default = Config::new_default();
    assert_eq!(load(&default.to_json_pretty()).config, default);

    // Non-default values, including the keys omitted when unset.
    let mut config = Config::new_default();
    config.cluster.secret = Some([7; 32]);
    config.cluster.follower_mode = true;
    config.cluster.peerstore_file = "peers.txt".to_string();
    config.cluster.listen_multiaddress =
        vec![addr("/ip4/0.0.0.0/tcp/1"), addr("/ip4/0.0.0.0/tcp/2")];
    let peer = PeerId::random();
    config.cluster.peer_addresses = vec![addr(&format!("/ip4/10.0.0.1/tcp/9096/p2p/{peer}"))];
    config.cluster.replication_factor_min = 2;
    config.cluster.replication_factor_max = 3;
    config.consensus.crdt.trusted_peers = TrustedPeers::Only(vec![peer]);
    config.consensus.crdt.batching.max_batch_age = GoDuration(Duration::from_millis(1500));
    let rest = config.api.restapi.as_mut().expect("restapi");
    rest.basic_auth_credentials = Some(BTreeMap::from([("u".to_string(), "p".to_string())]));
    rest.ssl_cert_file = Some("cert.pem".to_string());
    rest.ssl_key_file = Some("key.pem".to_string());
    rest.headers = BTreeMap::from([("X-A".to_string(), vec!["1".to_string(), "2".to_string()])]);
    config.api.pinsvcapi = None;
    config.informer.numpin = Some(NumpinInformerConfig::default());
    config.ipfs_connector.ipfshttp.unpin_disable = true;
    config.datastore.fjall.durability = Durability::Sync;
    config.validate().expect("valid");

    let text = config.to_json_pretty();
    let loaded = load(&text);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config, config);
}

#[test]
fn to_json_pretty_has_the_reference_shape() {
    let text = Config::new_default().to_json_pretty();
    assert!(
        text.starts_with("{\n  \"cluster\": {\n    \"peername\": "),
        "{text}"
    );
    assert!(text.ends_with("}\n"));
    for line in [
        r#""listen_multiaddress": "/ip4/0.0.0.0/tcp/9096","#,
        r#""grace_period": "2m0s""#,
        r#""repair_interval": "1h0m0s","#,
        r#""basic_auth_credentials": null,"#,
        r#""unpin_timeout": "3h0m0s","#,
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
    // Omitted when unset, as the reference does.
    for key in [
        "follower_mode",
        "peerstore_file",
        "ssl_cert_file",
        "unpin_disable",
        "node_https",
    ] {
        assert!(!text.contains(key), "{key} written:\n{text}");
    }
    // Section order as in the reference.
    let order = [
        "\"cluster\"",
        "\"consensus\"",
        "\"api\"",
        "\"ipfs_connector\"",
        "\"pin_tracker\"",
        "\"monitor\"",
        "\"allocator\"",
        "\"informer\"",
        "\"observations\"",
        "\"datastore\"",
    ];
    let positions: Vec<_> = order.iter().map(|k| text.find(k).expect(k)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}

#[test]
fn save_then_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::new_default();
    config.cluster.peername = "saved".to_string();
    config.save(dir.path()).expect("save");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![SERVICE_FILE], "temporary file left behind");
    let text = std::fs::read_to_string(dir.path().join(SERVICE_FILE)).expect("read");
    assert_eq!(load(&text).config, config);
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = Config::load(dir.path()).expect_err("no file");
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(SERVICE_FILE), "{err}");
}

fn init_opts(peers: Vec<Multiaddr>) -> InitOptions {
    InitOptions {
        force: false,
        peername: Some("peer-one".to_string()),
        secret: SecretChoice::Generate,
        peers,
        ipfs: IpfsChoice::Embedded,
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn read_config(dir: &Path) -> Config {
    load(&std::fs::read_to_string(dir.join(SERVICE_FILE)).expect("read service.json")).config
}

#[test]
fn init_writes_the_three_files_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("cluster");
    let report = init_folder_with_env(&dir, &init_opts(Vec::new()), no_env).expect("init");
    for file in [SERVICE_FILE, IDENTITY_FILE, PEERSTORE_FILE] {
        assert!(dir.join(file).is_file(), "{file} missing");
        assert!(
            report.written.contains(&dir.join(file)),
            "{file} not reported"
        );
    }
    let config = read_config(&dir);
    assert_eq!(config.cluster.peername, "peer-one");
    assert!(config.cluster.secret.is_some(), "a secret is generated");
    let identity = Identity::load_with_env(&dir, no_env).expect("identity");
    assert_eq!(identity.peer_id, report.peer_id);

    let err = init_folder_with_env(&dir, &init_opts(Vec::new()), no_env).expect_err("exists");
    assert!(matches!(err, ConfigError::Exists { .. }), "{err:?}");
    assert!(err.to_string().contains("--force"), "{err}");

    // --force rewrites service.json but keeps the peer's identity.
    let opts = InitOptions {
        force: true,
        secret: SecretChoice::None,
        ..init_opts(Vec::new())
    };
    let again = init_folder_with_env(&dir, &opts, no_env).expect("forced init");
    assert_eq!(again.peer_id, report.peer_id);
    assert!(again.kept.contains(&dir.join(IDENTITY_FILE)));
    assert_eq!(read_config(&dir).cluster.secret, None);
}

#[test]
fn init_with_peers_trusts_them_and_writes_the_peerstore() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (a, b) = (PeerId::random(), PeerId::random());
    let peers = vec![
        addr(&format!("/ip4/10.0.0.1/tcp/9096/p2p/{a}")),
        addr(&format!("/dns4/b.example/tcp/9096/p2p/{b}")),
    ];
    let opts = InitOptions {
        secret: SecretChoice::Hex("11".repeat(32)),
        ..init_opts(peers.clone())
    };
    init_folder_with_env(tmp.path(), &opts, no_env).expect("init");
    let config = read_config(tmp.path());
    assert_eq!(config.cluster.secret, Some([0x11; 32]));
    assert_eq!(
        config.consensus.crdt.trusted_peers,
        TrustedPeers::Only(vec![a, b])
    );
    assert_eq!(config.cluster.peer_addresses, peers);
    let peerstore = std::fs::read_to_string(tmp.path().join(PEERSTORE_FILE)).expect("peerstore");
    let lines: Vec<_> = peerstore.lines().collect();
    assert_eq!(lines, vec![peers[0].to_string(), peers[1].to_string()]);

    let bad = InitOptions {
        force: true,
        ..init_opts(vec![addr("/ip4/10.0.0.1/tcp/9096")])
    };
    let err = init_folder_with_env(tmp.path(), &bad, no_env).expect_err("no /p2p/");
    assert_eq!(invalid_key(&err), "cluster.peer_addresses[0]");
}

#[test]
fn identity_round_trip_and_mismatch() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let identity = Identity::generate();
    identity.save(tmp.path()).expect("save");
    let loaded = Identity::load_with_env(tmp.path(), no_env).expect("load");
    assert_eq!(loaded.peer_id, identity.peer_id);

    // Same key, someone else's id.
    let path = tmp.path().join(IDENTITY_FILE);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    json["id"] = PeerId::random().to_base58().into();
    std::fs::write(&path, json.to_string()).expect("write");
    let err = Identity::load_with_env(tmp.path(), no_env).expect_err("mismatch");
    assert!(matches!(err, IdentityError::Mismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(IDENTITY_FILE), "{err}");
}

/// `service.json` as `ipfs-cluster-service init` 1.1.6 writes it (spec §4.9).
const REFERENCE_1_1_6: &str = r#"{
  "cluster": {
    "peername": "ref-peer",
    "secret": "2588b80d5cb05374fa142aed6cbb047d1f4ef8ef15e37eba68c65b9d30df67ed",
    "leave_on_shutdown": false,
    "listen_multiaddress": ["/ip4/0.0.0.0/tcp/9096", "/ip4/0.0.0.0/udp/9096/quic"],
    "announce_multiaddress": [],
    "no_announce_multiaddress": [],
    "enable_relay_hop": true,
    "connection_manager": {"high_water": 400, "low_water": 100, "grace_period": "2m0s"},
    "resource_manager": {"enabled": true, "memory_limit_bytes": 0, "file_descriptors_limit": 0},
    "pubsub": {"seen_messages_ttl": "30m0s", "heartbeat_interval": "10s", "d_factor": 4,
               "history_gossip": 2, "history_length": 6, "flood_publish": false},
    "dial_peer_timeout": "3s",
    "state_sync_interval": "5m0s",
    "pin_recover_interval": "12m0s",
    "replication_factor_min": -1,
    "replication_factor_max": -1,
    "monitor_ping_interval": "15s",
    "peer_watch_interval": "5s",
    "mdns_interval": "10s",
    "pin_only_on_trusted_peers": false,
    "pin_only_on_untrusted_peers": false,
    "disable_repinning": true,
    "peer_addresses": []
  },
  "consensus": {
    "crdt": {
      "cluster_name": "ipfs-cluster",
      "trusted_peers": ["*"],
      "batching": {"max_batch_size": 0, "max_batch_age": "0s"},
      "repair_interval": "1h0m0s"
    }
  },
  "api": {
    "ipfsproxy": {
      "listen_multiaddress": "/ip4/127.0.0.1/tcp/9095",
      "node_multiaddress": "/ip4/127.0.0.1/tcp/5001",
      "log_file": "",
      "read_timeout": "0s",
      "read_header_timeout": "5s",
      "write_timeout": "0s",
      "idle_timeout": "1m0s",
      "max_header_bytes": 4096
    },
    "pinsvcapi": {
      "http_listen_multiaddress": "/ip4/127.0.0.1/tcp/9097",
      "read_timeout": "0s",
      "read_header_timeout": "5s",
      "write_timeout": "0s",
      "idle_timeout": "2m0s",
      "max_header_bytes": 4096,
      "basic_auth_credentials": null,
      "http_log_file": "",
      "headers": {},
      "cors_allowed_origins": ["*"],
      "cors_allowed_methods": ["GET"],
      "cors_allowed_headers": [],
      "cors_exposed_headers": ["Content-Type", "X-Stream-Output", "X-Chunked-Output", "X-Content-Length"],
      "cors_allow_credentials": true,
      "cors_max_age": "0s"
    },
    "restapi": {
      "http_listen_multiaddress": "/ip4/127.0.0.1/tcp/9094",
      "read_timeout": "0s",
      "read_header_timeout": "5s",
      "write_timeout": "0s",
      "idle_timeout": "2m0s",
      "max_header_bytes": 4096,
      "basic_auth_credentials": null,
      "http_log_file": "",
      "headers": {},
      "cors_allowed_origins": ["*"],
      "cors_allowed_methods": ["GET"],
      "cors_allowed_headers": [],
      "cors_exposed_headers": ["Content-Type", "X-Stream-Output", "X-Chunked-Output", "X-Content-Length"],
      "cors_allow_credentials": true,
      "cors_max_age": "0s"
    }
  },
  "ipfs_connector": {
    "ipfshttp": {
      "node_multiaddress": "/ip4/127.0.0.1/tcp/5001",
      "connect_swarms_delay": "30s",
      "ipfs_request_timeout": "5m0s",
      "pin_timeout": "2m0s",
      "unpin_timeout": "3h0m0s",
      "repogc_timeout": "24h0m0s",
      "informer_trigger_interval": 0
    }
  },
  "pin_tracker": {"stateless": {"concurrent_pins": 10, "priority_pin_max_age": "24h0m0s", "priority_pin_max_retries": 5}},
  "monitor": {"pubsubmon": {"check_interval": "15s"}},
  "allocator": {"balanced": {"allocate_by": ["tag:group", "freespace"]}},
  "informer": {
    "disk": {"metric_ttl": "30s", "metric_type": "freespace"},
    "pinqueue": {"metric_ttl": "30s", "weight_bucket_size": 100000},
    "tags": {"metric_ttl": "30s", "tags": {"group": "default"}}
  },
  "observations": {
    "metrics": {"enable_stats": false, "prometheus_endpoint": "/ip4/127.0.0.1/tcp/8888", "reporting_interval": "30s"},
    "tracing": {"enable_tracing": false, "jaeger_agent_endpoint": "/ip4/0.0.0.0/udp/6831", "sampling_prob": 0.3, "service_name": "cluster-daemon"}
  },
  "datastore": {"pebble": {"pebble_options": {"cache_size_bytes": 1073741824}}}
}"#;

#[test]
fn a_reference_service_json_loads_with_our_differences_reported() {
    let loaded = load(REFERENCE_1_1_6);
    let w = loaded.warnings.join("\n");
    assert_eq!(loaded.warnings.len(), 2, "{w}");
    assert!(w.contains("/ip4/0.0.0.0/udp/9096/quic dropped"), "{w}");
    assert!(w.contains("datastore.pebble ignored"), "{w}");

    let mut config = loaded.config;
    assert_eq!(config.cluster.peername, "ref-peer");
    assert!(config.cluster.secret.is_some());
    // The reference's "batching off" (0 / "0s") gets our batching defaults.
    assert_eq!(config.consensus.crdt.batching, Batching::default());
    // Apart from those, it is exactly our default configuration.
    let default = Config::new_default();
    config.cluster.peername = default.cluster.peername.clone();
    config.cluster.secret = None;
    // Our default also balances by pin queue length; a file that names
    // its own list keeps it.
    assert_eq!(
        config.allocator.balanced.allocate_by,
        ["tag:group", "freespace"]
    );
    config.allocator.balanced.allocate_by = default.allocator.balanced.allocate_by.clone();
    assert_eq!(config, default);
}
