//! `"source": "<url>"`: a `service.json` that points at a configuration
//! published elsewhere, as the reference's followers use (a collaborative
//! cluster's operators publish one template; every follower loads it at
//! start). The whole configuration is the remote one, as in the reference:
//! other keys of the local file are ignored with a warning, and a remote
//! configuration that is itself sourced is refused (no chains).
//!
//! One exception, beyond the reference: a local `"ipfs_connector"` replaces
//! the remote one. Which IPFS daemon a peer pins to (or whether it runs the
//! embedded node, and on which ports) is a fact of the volunteer's machine,
//! not of the cluster: the operators' template cannot know it, and one
//! template read by a thousand followers should not name their daemons.
//!
//! Beyond the reference, each successful fetch is cached beside
//! `service.json` ([`SOURCE_CACHE_FILE`]), so that a follower restarts when
//! the operators' web server or gateway is down: the cached copy is used and
//! a warning says so. Offline commands (`state`, `follow list`) read the
//! cache only, never the network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::{ConfigError, SERVICE_FILE};
use crate::folder::write_atomic;

/// The last configuration fetched from the source, beside `service.json`.
pub const SOURCE_CACHE_FILE: &str = "service.source.json";

/// The longest a fetch of the source may take (connecting included).
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest configuration accepted from a source: a `service.json` is a
/// few KiB, so anything near this is not one.
const MAX_SOURCE_BYTES: usize = 1 << 20;

/// Where a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `service.json` itself.
    File,
    /// Fetched from `url` just now (and cached).
    Fetched { url: String },
    /// The cached copy of `url`'s configuration.
    Cached { url: String },
}

/// A `service.json`'s text, or its source's, and what to say about it.
#[derive(Debug)]
pub(super) struct Resolved {
    pub text: String,
    pub path: PathBuf,
    pub origin: Origin,
    pub warnings: Vec<String>,
}

/// The URL in `text`'s top-level `"source"`, when there is one. Text that is
/// not a JSON object has none (its own parse reports what is wrong).
pub fn source_url(text: &str) -> Result<Option<String>, ConfigError> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return Ok(None);
    };
    match map.get("source") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.starts_with("http://") || s.starts_with("https://") => {
            Ok(Some(s.clone()))
        }
        Some(Value::String(s)) => Err(super::invalid(
            "source",
            format!("{s:?} is not an http:// or https:// URL"),
        )),
        Some(_) => Err(super::invalid("source", "must be a string")),
    }
}

/// The key of a sourced `service.json` that is kept over the remote one.
const LOCAL_KEY: &str = "ipfs_connector";

/// The warnings a sourced `service.json` deserves for its other keys.
fn ignored_keys(text: &str) -> Vec<String> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    map.keys()
        .filter(|k| !matches!(k.as_str(), "source" | "//" | LOCAL_KEY))
        .map(|k| format!("{k}: ignored, the configuration comes from \"source\""))
        .collect()
}

impl Resolved {
    /// The source's text with the local file's `ipfs_connector`, when it
    /// has one. A source text that is not a JSON object is kept as it is:
    /// its own parse says what is wrong with it.
    fn with_local_keys(mut self, local: &str) -> Resolved {
        let Ok(Value::Object(local)) = serde_json::from_str::<Value>(local) else {
            return self;
        };
        let Some(connector) = local.get(LOCAL_KEY) else {
            return self;
        };
        let Ok(Value::Object(mut merged)) = serde_json::from_str::<Value>(&self.text) else {
            return self;
        };
        merged.insert(LOCAL_KEY.to_string(), connector.clone());
        if let Ok(text) = serde_json::to_string_pretty(&Value::Object(merged)) {
            self.text = text;
        }
        self
    }
}

/// `dir/service.json`'s text, or its source's cached copy: never the
/// network. For the commands that run without the daemon.
pub(super) fn resolve_offline(dir: &Path) -> Result<Resolved, ConfigError> {
    let path = dir.join(SERVICE_FILE);
    let text = std::fs::read_to_string(&path).map_err(super::io_error(&path))?;
    let Some(url) = source_url(&text)? else {
        return Ok(Resolved {
            text,
            path,
            origin: Origin::File,
            warnings: Vec::new(),
        });
    };
    let warnings = ignored_keys(&text);
    let resolved = cached(dir, url, warnings, "not fetched by offline commands".into())?;
    Ok(resolved.with_local_keys(&text))
}

/// `dir/service.json`'s text, or its source's: fetched (and cached), else
/// the cached copy with a warning that says why.
pub(super) async fn resolve(dir: &Path) -> Result<Resolved, ConfigError> {
    let path = dir.join(SERVICE_FILE);
    let text = std::fs::read_to_string(&path).map_err(super::io_error(&path))?;
    let Some(url) = source_url(&text)? else {
        return Ok(Resolved {
            text,
            path,
            origin: Origin::File,
            warnings: Vec::new(),
        });
    };
    let mut warnings = ignored_keys(&text);
    let resolved = match fetch(&url).await {
        Ok(remote) => {
            // Checked before it replaces a good cached copy.
            if source_url(&remote)?.is_some() {
                return Err(ConfigError::SourceRedirect { url });
            }
            super::json::parse(&remote, Path::new(&url))?;
            let cache = dir.join(SOURCE_CACHE_FILE);
            if let Err(e) = write_atomic(&cache, remote.as_bytes()) {
                warnings.push(format!(
                    "{}: the fetched configuration was not cached: {e}",
                    cache.display()
                ));
            }
            Resolved {
                text: remote,
                path: PathBuf::from(&url),
                origin: Origin::Fetched { url },
                warnings,
            }
        }
        Err(reason) => cached(dir, url, warnings, reason)?,
    };
    Ok(resolved.with_local_keys(&text))
}

fn cached(
    dir: &Path,
    url: String,
    mut warnings: Vec<String>,
    reason: String,
) -> Result<Resolved, ConfigError> {
    let cache = dir.join(SOURCE_CACHE_FILE);
    match std::fs::read_to_string(&cache) {
        Ok(text) => {
            warnings.push(format!(
                "configuration source {url} unavailable ({reason}): using the cached copy {}",
                cache.display()
            ));
            Ok(Resolved {
                text,
                path: cache,
                origin: Origin::Cached { url },
                warnings,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ConfigError::Source { url, reason, cache })
        }
        Err(source) => Err(ConfigError::Io {
            path: cache,
            source,
        }),
    }
}

/// GETs `url`: the body of a 2xx answer, at most [`MAX_SOURCE_BYTES`], as
/// text; else why not.
pub async fn fetch(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.get(url).send().await.map_err(|e| chain(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the server answered {status}"));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| chain(&e))?;
        if body.len() + chunk.len() > MAX_SOURCE_BYTES {
            return Err(format!(
                "the answer is larger than {MAX_SOURCE_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "the answer is not UTF-8 text".to_string())
}

/// An error with its causes: reqwest's own message ("error sending
/// request") says nothing about the refused connection beneath.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_urls() {
        assert_eq!(source_url("{}").unwrap(), None);
        assert_eq!(source_url(r#"{"source": ""}"#).unwrap(), None);
        assert_eq!(
            source_url(r#"{"source": "https://example.org/c.json"}"#).unwrap(),
            Some("https://example.org/c.json".into())
        );
        assert!(source_url(r#"{"source": "ftp://x"}"#).is_err());
        assert!(source_url(r#"{"source": 3}"#).is_err());
        assert_eq!(source_url("not json").unwrap(), None);
    }

    /// Serves `body` with `status` to every request, on 127.0.0.1; returns
    /// the URL of `/service.json` and the server's task.
    async fn serve(status: &'static str, body: String) -> (String, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/service.json", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = [0u8; 4096];
                let _ = socket.read(&mut head).await;
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (url, task)
    }

    fn template(peername: &str) -> String {
        let mut config = crate::config::Config::new_default();
        config.cluster.peername = peername.into();
        config.to_json_pretty()
    }

    #[tokio::test]
    async fn a_sourced_configuration_is_fetched_cached_and_used_when_the_source_is_down() {
        use crate::config::Config;
        let dir = tempfile::tempdir().unwrap();
        let (url, server) = serve("200 OK", template("from-the-template")).await;
        std::fs::write(
            dir.path().join(SERVICE_FILE),
            format!(r#"{{"source": "{url}"}}"#),
        )
        .unwrap();

        // No cached copy yet: offline commands have nothing to read.
        let err = Config::load(dir.path()).unwrap_err();
        assert!(matches!(err, ConfigError::Source { .. }), "{err}");

        let loaded = Config::load_fetching(dir.path()).await.unwrap();
        assert_eq!(loaded.config.cluster.peername, "from-the-template");
        assert_eq!(loaded.origin, Origin::Fetched { url: url.clone() });
        assert!(dir.path().join(SOURCE_CACHE_FILE).exists());

        // The source goes away: the cached copy is used, and said so.
        server.abort();
        let _ = server.await;
        let loaded = Config::load_fetching(dir.path()).await.unwrap();
        assert_eq!(loaded.config.cluster.peername, "from-the-template");
        assert_eq!(loaded.origin, Origin::Cached { url: url.clone() });
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.contains("using the cached copy")),
            "{:?}",
            loaded.warnings
        );
        // Offline commands read the cache.
        let offline = Config::load(dir.path()).unwrap();
        assert_eq!(offline.config.cluster.peername, "from-the-template");

        // Neither the source nor a copy: a typed error naming both.
        std::fs::remove_file(dir.path().join(SOURCE_CACHE_FILE)).unwrap();
        let err = Config::load_fetching(dir.path()).await.unwrap_err();
        let ConfigError::Source { url: named, .. } = &err else {
            panic!("expected a source error, got {err}");
        };
        assert_eq!(named, &url);
        assert!(err.to_string().contains("no cached copy"), "{err}");
    }

    #[tokio::test]
    async fn the_local_ipfs_connector_replaces_the_templates_and_nothing_else_does() {
        use crate::config::Config;
        let dir = tempfile::tempdir().unwrap();
        let (url, server) = serve("200 OK", template("from-the-template")).await;
        std::fs::write(
            dir.path().join(SERVICE_FILE),
            format!(
                r#"{{"source": "{url}",
                    "cluster": {{"peername": "local"}},
                    "ipfs_connector": {{"embedded": {{"gateway_listen_multiaddress": "/ip4/127.0.0.1/tcp/18080"}}}}}}"#
            ),
        )
        .unwrap();
        let check = |loaded: &crate::config::Loaded| {
            // The template's cluster section, the local IPFS connector.
            assert_eq!(loaded.config.cluster.peername, "from-the-template");
            let embedded = loaded.config.ipfs_connector.embedded.as_ref();
            assert_eq!(
                embedded.map(|e| e.gateway_listen_multiaddress[0].to_string()),
                Some("/ip4/127.0.0.1/tcp/18080".to_string())
            );
            assert!(
                loaded
                    .warnings
                    .iter()
                    .any(|w| w.starts_with("cluster: ignored")),
                "{:?}",
                loaded.warnings
            );
            assert!(
                !loaded.warnings.iter().any(|w| w.contains("ipfs_connector")),
                "{:?}",
                loaded.warnings
            );
        };
        check(&Config::load_fetching(dir.path()).await.unwrap());
        // The cache holds the template as fetched; the override applies to it too.
        let cached = std::fs::read_to_string(dir.path().join(SOURCE_CACHE_FILE)).unwrap();
        assert!(!cached.contains("18080"));
        check(&Config::load(dir.path()).unwrap());
        server.abort();
        let _ = server.await;
        check(&Config::load_fetching(dir.path()).await.unwrap());
    }

    #[tokio::test]
    async fn a_failing_or_chained_source_keeps_the_cached_copy() {
        use crate::config::Config;
        let dir = tempfile::tempdir().unwrap();
        let good = template("cached");
        std::fs::write(dir.path().join(SOURCE_CACHE_FILE), &good).unwrap();

        // A 404 is a source that cannot be reached: the copy is used.
        let (url, _server) = serve("404 Not Found", "gone".into()).await;
        std::fs::write(
            dir.path().join(SERVICE_FILE),
            format!(r#"{{"source": "{url}"}}"#),
        )
        .unwrap();
        let loaded = Config::load_fetching(dir.path()).await.unwrap();
        assert_eq!(loaded.config.cluster.peername, "cached");
        assert!(
            loaded.warnings.iter().any(|w| w.contains("404")),
            "{:?}",
            loaded.warnings
        );

        // A template that names another source is refused, and the good
        // copy is not overwritten.
        let (url, _server) = serve("200 OK", r#"{"source": "http://127.0.0.1:1/x"}"#.into()).await;
        std::fs::write(
            dir.path().join(SERVICE_FILE),
            format!(r#"{{"source": "{url}"}}"#),
        )
        .unwrap();
        let err = Config::load_fetching(dir.path()).await.unwrap_err();
        assert!(matches!(err, ConfigError::SourceRedirect { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(SOURCE_CACHE_FILE)).unwrap(),
            good
        );
    }

    #[test]
    fn other_keys_of_a_sourced_file_are_named() {
        let w = ignored_keys(r#"{"source": "http://x", "cluster": {}, "//": "c"}"#);
        assert_eq!(
            w,
            vec!["cluster: ignored, the configuration comes from \"source\""]
        );
    }
}
