//! The fake Kubo of the fast tests answers as real Kubo 0.43.1 does: the
//! same requests go to both, and each reply must have the same status,
//! the same content type and trailer announcement, and the same JSON shape
//! (keys and value types, line by line for NDJSON). Values that differ by
//! nature (CIDs of other content, peer ids, sizes) are not compared. When
//! Kubo changes a reply, this test says which one, so the fake and the
//! connector that the fake stands in for get fixed together.

mod common;

use common::fake_kubo::FakeKubo;
use common::kubo::Kubo;
use serde_json::Value;

/// One daemon under test: its API origin and a client.
struct Daemon {
    name: &'static str,
    url: String,
    http: reqwest::Client,
}

/// What a reply looks like, without the values that differ by nature.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    content_type: Option<String>,
    trailer: Option<String>,
    /// The shape of each JSON line (one for a plain JSON body), or the
    /// body as text when it is not JSON.
    body: Vec<Value>,
}

/// `{"a":[1]}` → `{"a":["number"]}`: keys kept, values replaced by their
/// type; an array by the shape of its first element (empty stays empty).
fn shape(v: &Value) -> Value {
    match v {
        // Keys that are CIDs (`pin/ls`'s `Keys`) are values too.
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k.parse::<cid::Cid>() {
                        Ok(_) => "<cid>".to_string(),
                        Err(_) => k.clone(),
                    };
                    (key, shape(v))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => Value::Null,
    }
}

impl Daemon {
    async fn send(&self, method: reqwest::Method, cmd: &str, body: Option<&[u8]>) -> Seen {
        let mut req = self
            .http
            .request(method, format!("{}/api/v0/{cmd}", self.url));
        if let Some(data) = body {
            let (content_type, body) = common::multipart_files(&[("f", data)]);
            req = req.header("content-type", content_type).body(body);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {cmd}: {e}", self.name));
        let header = |k: &str| {
            res.headers()
                .get(k)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (status, content_type, trailer) = (
            res.status().as_u16(),
            header("content-type"),
            header("trailer"),
        );
        let text = res.text().await.unwrap();
        let body = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .map(|v| shape(&v))
                    .unwrap_or_else(|_| l.into())
            })
            // A stream of many like lines is one shape, however many.
            .fold(Vec::new(), |mut acc: Vec<Value>, v| {
                if acc.last() != Some(&v) {
                    acc.push(v);
                }
                acc
            });
        Seen {
            status,
            content_type,
            trailer,
            body,
        }
    }

    /// `block/put` of `data`; the CID the daemon gave it.
    async fn put(&self, data: &[u8]) -> String {
        let (content_type, body) = common::multipart_files(&[("f", data)]);
        let res = self
            .http
            .post(format!("{}/api/v0/block/put", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let v: Value = res.json().await.unwrap();
        v["Key"].as_str().unwrap().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_kubo_answers_as_kubo_does() {
    let tmp = common::temp();
    let kubo = Kubo::start(&tmp.path().join("kubo")).await;
    let fake = FakeKubo::start().await;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let fake_port = fake.multiaddr().to_string();
    let daemons = [
        Daemon {
            name: "Kubo",
            url: kubo.api_url(),
            http: http.clone(),
        },
        Daemon {
            name: "fake",
            url: format!("http://127.0.0.1:{}", fake_port.rsplit('/').next().unwrap()),
            http,
        },
    ];
    // The same content on both: a pinned block, an unpinned one, and one
    // that neither holds nor can fetch (pins of it must not be tried).
    let mut cids = Vec::new();
    for d in &daemons {
        let pinned = d.put(b"pinned by the conformance test").await;
        let other = d.put(b"unpinned in the conformance test").await;
        cids.push((pinned, other));
    }
    assert_eq!(cids[0], cids[1], "block/put gives the same CIDs");
    let (pinned, other) = cids.remove(0);
    let unknown = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR";

    let cases: Vec<(reqwest::Method, String, Option<&[u8]>)> = vec![
        (reqwest::Method::POST, "id".into(), None),
        (reqwest::Method::POST, "version".into(), None),
        (reqwest::Method::GET, "version".into(), None),
        (reqwest::Method::POST, format!("pin/add?arg={pinned}"), None),
        (
            reqwest::Method::POST,
            format!("pin/add?arg={pinned}&progress=true"),
            None,
        ),
        (reqwest::Method::POST, "pin/add?arg=not-a-cid".into(), None),
        (reqwest::Method::POST, "pin/ls?type=recursive".into(), None),
        (
            reqwest::Method::POST,
            "pin/ls?type=recursive&stream=true".into(),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("pin/ls?arg={pinned}&type=recursive&stream=true"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("pin/ls?arg={other}&stream=true"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("pin/update?arg={pinned}&arg={other}&unpin=false"),
            None,
        ),
        (reqwest::Method::POST, format!("pin/rm?arg={other}"), None),
        (reqwest::Method::POST, format!("pin/rm?arg={other}"), None),
        (reqwest::Method::POST, format!("pin/rm?arg={unknown}"), None),
        (reqwest::Method::POST, "repo/stat".into(), None),
        (
            reqwest::Method::POST,
            "repo/stat?size-only=true".into(),
            None,
        ),
        (reqwest::Method::POST, "repo/gc".into(), None),
        (reqwest::Method::POST, "swarm/peers".into(), None),
        (
            reqwest::Method::POST,
            "swarm/connect?arg=garbage".into(),
            None,
        ),
        (
            reqwest::Method::POST,
            "block/put?cid-codec=dag-cbor".into(),
            Some(&b"\xa1\x61a\x01"[..]),
        ),
        (reqwest::Method::POST, "no/such/command".into(), None),
    ];
    let mut differences = Vec::new();
    for (method, cmd, body) in &cases {
        let real = daemons[0].send(method.clone(), cmd, *body).await;
        let fake = daemons[1].send(method.clone(), cmd, *body).await;
        if real != fake {
            differences.push(format!(
                "{method} {cmd}\n  Kubo: {real:?}\n  fake: {fake:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "the fake differs from Kubo 0.43.1 on {} of {} requests:\n{}",
        differences.len(),
        cases.len(),
        differences.join("\n")
    );
}
