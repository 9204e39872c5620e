//! HTTPS: a real `pincluster daemon` serving its REST API over TLS with a
//! certificate made at test time (paths relative to its folder), reached by
//! an HTTPS client and by the `pincluster` client binary; and the daemon
//! refusing to start on a certificate or key it cannot use.

mod common;

use std::process::Command;

use common::tls::TestCerts;
use common::*;
use serde_json::Value;

const CREDS: &str = "alice:secret";

/// Runs the client binary against the API on `port`, with no inherited
/// trust settings or credentials: exit code, stdout, stderr.
fn ctl(port: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["--host", &format!("/ip4/127.0.0.1/tcp/{port}")])
        .args(args)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env_remove("CLUSTER_CREDENTIALS")
        .envs(env.iter().copied())
        .output()
        .expect("run the client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A folder (made if need be) whose service.json names `cert` and `key`
/// (relative paths).
fn folder_with_tls(dir: &std::path::Path, spec: &PeerSpec, cert: &str, key: &str) {
    if !dir.join("service.json").exists() {
        init_folder(dir, spec);
    }
    let path = dir.join("service.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["api"]["restapi"]["ssl_cert_file"] = cert.into();
    config["api"]["restapi"]["ssl_key_file"] = key.into();
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_https_with_auth_for_clients_and_the_cli() {
    let dir = temp();
    let certs = TestCerts::new();
    certs.write(dir.path());
    let spec = PeerSpec {
        env: vec![("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS".into(), CREDS.into())],
        ..PeerSpec::default()
    };
    folder_with_tls(dir.path(), &spec, "cert.pem", "key.pem");
    // The harness's client trusts the CA and gets `/id` over HTTPS.
    let p = TestPeer::start_https(dir.path().into(), spec, &certs.ca).await;
    assert!(p.api.starts_with("https://"), "{}", p.api);
    let port = p.api.rsplit(':').next().unwrap().to_string();

    // The same shapes as over HTTP: a pin, then its status streamed.
    let cid = &cids("tls", 1)[0];
    let (status, pin) = p.pin(cid, "name=over-tls").await;
    assert_eq!(status, 200, "{pin}");
    assert_eq!(pin["cid"], cid.as_str());
    let id = p.get_json("/id").await.expect("GET /id");
    assert_eq!(id["id"], p.id.as_str());
    assert!(id["cluster_peers"].is_array(), "{id}");
    let pins = p.get_ndjson("/pins").await.expect("GET /pins");
    assert_eq!(pins.len(), 1, "{pins:?}");
    assert_eq!(pins[0]["cid"], cid.as_str());
    assert_eq!(pins[0]["name"], "over-tls");
    assert!(pins[0]["peer_map"][&p.id]["status"].is_string(), "{pins:?}");

    // Auth and the header limit answer as over HTTP.
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certs.ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let res = trusting
        .get(format!("{}/id", p.api))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["message"], "unauthorized: access denied");
    let res = trusting
        .get(format!("{}/id", p.api))
        .basic_auth("alice", Some("secret"))
        .header("X-Big", "x".repeat(16 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431);

    // Plain HTTP to the HTTPS port: Go's 400, not a TLS alert.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/id"))
        .await
        .expect("an answer in clear");
    assert_eq!(plain.status(), 400);
    assert!(
        plain
            .text()
            .await
            .unwrap()
            .contains("Client sent an HTTP request to an HTTPS server"),
    );

    // The client binary: basic auth implies https; the certificate is not
    // trusted unless said so.
    let auth = ["--basic-auth", CREDS];
    let (code, out, err) = ctl(&port, &[], &[&auth[..], &["id"]].concat());
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("certificate verify failed"), "{out}");
    assert!(out.contains("--no-check-certificate"), "{out}");
    let (code, out, err) = ctl(
        &port,
        &[],
        &[&auth[..], &["--https", "--no-check-certificate", "id"]].concat(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("{} | ", p.id)), "{out}");
    // A CA the system store is told about (SSL_CERT_FILE) is trusted, and
    // the NDJSON stream of `status` comes through.
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let (code, out, err) = ctl(
        &port,
        &[("SSL_CERT_FILE", ca)],
        &[&auth[..], &["status"]].concat(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("{cid} | over-tls:")), "{out}");
    // Without credentials, over https: the API's 401, exit code 2.
    let (code, out, _) = ctl(&port, &[("SSL_CERT_FILE", ca)], &["--https", "id"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Code: 401"), "{out}");
}

/// Runs a daemon on `dir`, which must fail to start: its stderr.
async fn failed_start(dir: &std::path::Path) -> String {
    let out = tokio::process::Command::new(BIN)
        .args(["daemon", "--config"])
        .arg(dir)
        .env("CLUSTER_LISTENMULTIADDRESS", "/ip4/127.0.0.1/tcp/0")
        .env(
            "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS",
            "/ip4/127.0.0.1/tcp/0",
        )
        .env(
            "CLUSTER_IPFSPROXY_LISTENMULTIADDRESS",
            "/ip4/127.0.0.1/tcp/0",
        )
        .output();
    let out = tokio::time::timeout(DEADLINE, out)
        .await
        .expect("the daemon exits")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unusable_key_stops_the_daemon_naming_the_file() {
    let dir = temp();
    let certs = TestCerts::new();
    certs.write(dir.path());
    let spec = PeerSpec::default();

    folder_with_tls(dir.path(), &spec, "cert.pem", "missing.pem");
    let err = failed_start(dir.path()).await;
    let missing = dir.path().join("missing.pem");
    assert!(
        err.contains(&format!("ssl_key_file {}: No such file", missing.display())),
        "{err}"
    );

    std::fs::write(dir.path().join("garbage.pem"), "not a key\n").unwrap();
    folder_with_tls(dir.path(), &spec, "cert.pem", "garbage.pem");
    let err = failed_start(dir.path()).await;
    let garbage = dir.path().join("garbage.pem");
    assert!(
        err.contains(&format!(
            "ssl_key_file {}: no PEM private key",
            garbage.display()
        )),
        "{err}"
    );

    // The key of another certificate: rustls refuses the pair.
    std::fs::write(dir.path().join("other.pem"), TestCerts::new().key).unwrap();
    folder_with_tls(dir.path(), &spec, "cert.pem", "other.pem");
    let err = failed_start(dir.path()).await;
    assert!(
        err.contains("ssl_cert_file") && err.contains("other.pem"),
        "{err}"
    );

    // A certificate file with no certificate in it.
    folder_with_tls(dir.path(), &spec, "key.pem", "key.pem");
    let err = failed_start(dir.path()).await;
    assert!(
        err.contains("ssl_cert_file") && err.contains("no PEM certificate"),
        "{err}"
    );
}
