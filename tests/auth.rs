//! Authentication, CORS, configured headers and request limits of the REST
//! API, against a real `pincluster daemon` over real HTTP.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::http::request;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const CREDS: &str = "alice:secret";

fn basic(user_pass: &str) -> String {
    format!("Basic {}", STANDARD.encode(user_pass))
}

/// An HS256 JWT with `claims`, signed with `key` (HMAC, RFC 2104).
fn jwt(claims: &str, key: &[u8]) -> String {
    let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims);
    let signed = format!("{head}.{body}");
    let mut k = key.to_vec();
    k.resize(64, 0);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(&signed)
        .finalize();
    let mac = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac))
}

/// A peer with basic auth, a custom header and a CORS policy that allows
/// POST and caches preflights for ten minutes.
async fn guarded(dir: &std::path::Path) -> TestPeer {
    let spec = PeerSpec {
        env: vec![("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS".into(), CREDS.into())],
        ..PeerSpec::default()
    };
    init_folder(dir, &spec);
    let path = dir.join("service.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rest = &mut config["api"]["restapi"];
    rest["headers"] = serde_json::json!({"X-Custom": ["yes"]});
    rest["cors_allowed_methods"] = serde_json::json!(["GET", "POST"]);
    rest["cors_max_age"] = "10m0s".into();
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    TestPeer::start(dir.into(), spec).await
}

async fn error_of(res: &common::http::RawResponse) -> Value {
    serde_json::from_str(&res.body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_tokens_cors_and_limits() {
    let dir = temp();
    let p = guarded(dir.path()).await;

    // No credentials: 401, both challenges, no CORS headers (auth sits
    // outside CORS), the configured header still on the JSON error.
    let res = request(&p.api, "GET", "/id", &[("Origin", "http://ui.example")]).await;
    assert_eq!(res.status, 401);
    assert_eq!(
        error_of(&res).await,
        serde_json::json!({"code": 401, "message": "unauthorized: no auth provided"})
    );
    assert_eq!(
        res.header_all("www-authenticate"),
        [
            "Bearer realm=\"Restricted IPFS Cluster API\"",
            "Basic realm=\"Restricted IPFS Cluster API\""
        ]
    );
    assert_eq!(res.header("access-control-allow-origin"), None);
    assert_eq!(res.header("x-custom"), Some("yes"));

    // Wrong password, unknown user, empty password: access denied.
    for creds in ["alice:wrong", "bob:secret", "alice:"] {
        let res = request(&p.api, "GET", "/id", &[("Authorization", &basic(creds))]).await;
        assert_eq!(res.status, 401, "{creds}");
        assert_eq!(
            error_of(&res).await["message"],
            "unauthorized: access denied"
        );
        assert_eq!(
            res.header("www-authenticate"),
            Some("Basic realm=\"Restricted IPFS Cluster API\"")
        );
    }

    // The right password: 200, with the configured header and CORS.
    let res = request(
        &p.api,
        "GET",
        "/version",
        &[
            ("Authorization", &basic(CREDS)),
            ("Origin", "http://ui.example"),
        ],
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-custom"), Some("yes"));
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    assert!(
        res.header("access-control-expose-headers")
            .unwrap()
            .contains("X-Chunked-Output")
    );

    // Open without credentials: GET /health and preflights.
    assert_eq!(request(&p.api, "GET", "/health", &[]).await.status, 204);
    let res = request(
        &p.api,
        "OPTIONS",
        "/pins/x",
        &[
            ("Origin", "http://ui.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "Content-Type"),
        ],
    )
    .await;
    assert_eq!(res.status, 204);
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    assert_eq!(res.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        res.header("access-control-allow-headers"),
        Some("Content-Type")
    );
    assert_eq!(res.header("access-control-max-age"), Some("600"));
    // A method the policy does not allow: 204 without the allow headers.
    let res = request(
        &p.api,
        "OPTIONS",
        "/pins/x",
        &[
            ("Origin", "http://ui.example"),
            ("Access-Control-Request-Method", "DELETE"),
        ],
    )
    .await;
    assert_eq!(res.status, 204);
    assert_eq!(res.header("access-control-allow-origin"), None);

    // POST /token with basic auth; the token works as a bearer token and
    // can itself get a new token.
    let res = request(
        &p.api,
        "POST",
        "/token",
        &[("Authorization", &basic(CREDS))],
    )
    .await;
    assert_eq!(res.status, 200);
    let token = error_of(&res).await["token"].as_str().unwrap().to_string();
    assert_eq!(token.split('.').count(), 3);
    let bearer = format!("Bearer {token}");
    let res = request(&p.api, "GET", "/id", &[("Authorization", &bearer)]).await;
    assert_eq!(res.status, 200);
    assert_eq!(error_of(&res).await["id"], p.id.as_str());
    let res = request(&p.api, "POST", "/token", &[("Authorization", &bearer)]).await;
    assert_eq!(res.status, 200);
    // The same token a client could compute: HS256 over {"iss":"alice"}.
    assert_eq!(token, jwt(r#"{"iss":"alice"}"#, b"secret"));

    // Forged, expired, wrong key, unknown issuer: invalid token.
    let mut forged = token.clone();
    forged.replace_range(forged.len() - 2.., "AA");
    let now = chrono::Utc::now().timestamp();
    let bad = [
        forged,
        jwt(
            &format!(r#"{{"iss":"alice","exp":{}}}"#, now - 60),
            b"secret",
        ),
        jwt(r#"{"iss":"alice"}"#, b"guessed"),
        jwt(r#"{"iss":"mallory"}"#, b"secret"),
        "not.a.jwt".to_string(),
    ];
    for t in &bad {
        let res = request(
            &p.api,
            "GET",
            "/id",
            &[("Authorization", &format!("Bearer {t}"))],
        )
        .await;
        assert_eq!(res.status, 401, "{t}");
        assert_eq!(
            error_of(&res).await["message"],
            "unauthorized: invalid token"
        );
        assert_eq!(
            res.header("www-authenticate"),
            Some("Bearer realm=\"Restricted IPFS Cluster API\", error=\"invalid_token\"")
        );
    }
    // A token that expires later is good until then.
    let later = jwt(
        &format!(r#"{{"iss":"alice","exp":{}}}"#, now + 3600),
        b"secret",
    );
    let res = request(
        &p.api,
        "GET",
        "/id",
        &[("Authorization", &format!("Bearer {later}"))],
    )
    .await;
    assert_eq!(res.status, 200);

    // Limits: oversized request headers get 431; an oversized body 413.
    let big = "x".repeat(16 * 1024);
    let res = request(
        &p.api,
        "GET",
        "/id",
        &[("Authorization", &basic(CREDS)), ("X-Big", &big)],
    )
    .await;
    assert_eq!(res.status, 431);
    let res = request(
        &p.api,
        "POST",
        "/peers",
        &[
            ("Authorization", &basic(CREDS)),
            ("Content-Length", "5000000"),
        ],
    )
    .await;
    assert_eq!(res.status, 413);
    assert_eq!(error_of(&res).await["code"], 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_configured_everything_is_open_but_token() {
    let dir = temp();
    let p = TestPeer::start(dir.path().into(), PeerSpec::default()).await;
    assert_eq!(request(&p.api, "GET", "/id", &[]).await.status, 200);
    let res = request(&p.api, "POST", "/token", &[]).await;
    assert_eq!(res.status, 401);
    assert_eq!(
        error_of(&res).await,
        serde_json::json!({"code": 401, "message": "unauthorized"})
    );
}
