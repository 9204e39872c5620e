//! `identity.json`: the peer's Ed25519 key pair and the peer id derived from it.
//!
//! The file has ipfs-cluster's shape,
//! `{"id": "12D3KooW…", "private_key": "<base64 of the libp2p protobuf-encoded private key>"}`,
//! so a folder made by `ipfs-cluster-service init` keeps its peer id here.
//! It lives apart from `service.json` so that one configuration can be copied
//! to every peer while each peer keeps its own key.
//!
//! `CLUSTER_PRIVATEKEY` (and `CLUSTER_ID`, checked against it) override the
//! file: that is how containers inject a key without writing it to a volume.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use serde_json::Value;

/// Name of the identity file inside the configuration folder.
pub const IDENTITY_FILE: &str = "identity.json";

/// Environment variable holding a base64 private key that replaces the file's.
pub const ENV_PRIVATE_KEY: &str = "CLUSTER_PRIVATEKEY";
/// Environment variable holding the expected peer id (checked, never trusted blindly).
pub const ENV_ID: &str = "CLUSTER_ID";

/// Why `identity.json` (or its environment overrides) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the file failed.
    #[error("I/O error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("{}: invalid JSON: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// A key of the file is missing or unusable.
    #[error("{}: {key}: {problem}", path.display())]
    Invalid {
        path: PathBuf,
        key: &'static str,
        problem: String,
    },
    /// The `id` written in the file is not the one of its private key.
    #[error("{}: id {id} does not match the private key, whose peer id is {derived}", path.display())]
    Mismatch {
        path: PathBuf,
        id: String,
        /// The peer id of the private key.
        derived: String,
    },
    /// An environment override is malformed or contradicts the key.
    #[error("environment variable {var}: {problem}")]
    Env { var: &'static str, problem: String },
}

/// The peer's key pair and its peer id.
#[derive(Clone)]
pub struct Identity {
    pub keypair: Keypair,
    pub peer_id: PeerId,
}

// Hand-written so that no log line can ever carry the private key.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh Ed25519 identity (what `init` creates).
    pub fn generate() -> Identity {
        Identity::from_keypair(Keypair::generate_ed25519())
    }

    /// Wraps a key pair, deriving its peer id.
    pub fn from_keypair(keypair: Keypair) -> Identity {
        let peer_id = keypair.public().to_peer_id();
        Identity { keypair, peer_id }
    }

    /// Where the identity of the configuration folder `dir` lives.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(IDENTITY_FILE)
    }

    /// Reads `dir/identity.json`, then applies `CLUSTER_PRIVATEKEY` / `CLUSTER_ID`
    /// from the process environment.
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        Identity::load_with_env(dir, |var| std::env::var(var).ok())
    }

    /// [`Identity::load`] with the environment given as a lookup function.
    ///
    /// When `CLUSTER_PRIVATEKEY` is set, the file is not read at all (it may be
    /// absent) and the peer id is derived from that key; `CLUSTER_ID`, when set,
    /// must then name the same peer. Empty variables count as unset.
    pub fn load_with_env(
        dir: &Path,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Identity, IdentityError> {
        let identity = match lookup(ENV_PRIVATE_KEY).filter(|v| !v.is_empty()) {
            Some(key) => {
                let keypair = decode_private_key(&key).map_err(|problem| IdentityError::Env {
                    var: ENV_PRIVATE_KEY,
                    problem,
                })?;
                Identity::from_keypair(keypair)
            }
            None => read_file(&Identity::path(dir))?,
        };
        if let Some(id) = lookup(ENV_ID).filter(|v| !v.is_empty()) {
            let expected: PeerId = id.parse().map_err(|e| IdentityError::Env {
                var: ENV_ID,
                problem: format!("invalid peer id {id:?}: {e}"),
            })?;
            if expected != identity.peer_id {
                return Err(IdentityError::Env {
                    var: ENV_ID,
                    problem: format!(
                        "{expected} does not match the private key, whose peer id is {}",
                        identity.peer_id
                    ),
                });
            }
        }
        Ok(identity)
    }

    /// Writes `dir/identity.json` atomically, readable by the owner only.
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let path = Identity::path(dir);
        let encoded = self
            .keypair
            .to_protobuf_encoding()
            .map_err(|e| IdentityError::Invalid {
                path: path.clone(),
                key: "private_key",
                problem: format!("cannot encode this key type: {e}"),
            })?;
        let json = serde_json::json!({
            "id": self.keypair.public().to_peer_id().to_base58(),
            "private_key": BASE64.encode(encoded),
        });
        let mut text = serde_json::to_string_pretty(&json)
            .expect("a JSON object of two strings always serializes");
        text.push('\n');
        crate::folder::write_atomic(&path, text.as_bytes())
            .map_err(|source| IdentityError::Io { path, source })
    }
}

fn read_file(path: &Path) -> Result<Identity, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Identity::parse(&text, path)
}

impl Identity {
    /// Reads the text of an identity file; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Identity, IdentityError> {
        let value: Value = serde_json::from_str(text).map_err(|e| IdentityError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let field = |key: &'static str| -> Result<&str, IdentityError> {
            value
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| IdentityError::Invalid {
                    path: path.to_path_buf(),
                    key,
                    problem: "missing, empty or not a string".to_string(),
                })
        };
        let id = field("id")?;
        let keypair = decode_private_key(field("private_key")?).map_err(|problem| {
            IdentityError::Invalid {
                path: path.to_path_buf(),
                key: "private_key",
                problem,
            }
        })?;
        let identity = Identity::from_keypair(keypair);
        if id != identity.peer_id.to_base58() {
            return Err(IdentityError::Mismatch {
                path: path.to_path_buf(),
                id: id.to_string(),
                derived: identity.peer_id.to_base58(),
            });
        }
        Ok(identity)
    }
}

/// Base64 (standard alphabet, as Go's `base64.StdEncoding`) of a libp2p
/// protobuf `PrivateKey`.
fn decode_private_key(text: &str) -> Result<Keypair, String> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|e| format!("not valid base64: {e}"))?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| format!("not a libp2p private key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn save_then_load_gives_the_same_peer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let identity = Identity::generate();
        identity.save(dir.path()).expect("save");
        let loaded = Identity::load_with_env(dir.path(), no_env).expect("load");
        assert_eq!(loaded.peer_id, identity.peer_id);
        assert_eq!(
            loaded.keypair.to_protobuf_encoding().expect("encode"),
            identity.keypair.to_protobuf_encoding().expect("encode")
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        Identity::generate().save(dir.path()).expect("save");
        let mode = std::fs::metadata(Identity::path(dir.path()))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_id_that_is_not_the_keys_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let identity = Identity::generate();
        let other = Identity::generate();
        let key = BASE64.encode(identity.keypair.to_protobuf_encoding().expect("encode"));
        let text = serde_json::json!({"id": other.peer_id.to_base58(), "private_key": key});
        std::fs::write(Identity::path(dir.path()), text.to_string()).expect("write");
        let err = Identity::load_with_env(dir.path(), no_env).expect_err("mismatch");
        assert!(matches!(err, IdentityError::Mismatch { .. }), "{err:?}");
        assert!(err.to_string().contains(IDENTITY_FILE), "{err}");
    }

    #[test]
    fn a_missing_key_names_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(Identity::path(dir.path()), r#"{"id": "x"}"#).expect("write");
        let err = Identity::load_with_env(dir.path(), no_env).expect_err("no key");
        assert!(
            matches!(
                err,
                IdentityError::Invalid {
                    key: "private_key",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn the_environment_key_replaces_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let env_identity = Identity::generate();
        let key = BASE64.encode(env_identity.keypair.to_protobuf_encoding().expect("encode"));
        let id = env_identity.peer_id.to_base58();
        let lookup = |var: &str| match var {
            ENV_PRIVATE_KEY => Some(key.clone()),
            ENV_ID => Some(id.clone()),
            _ => None,
        };
        // No identity.json at all: the environment is enough.
        let loaded = Identity::load_with_env(dir.path(), lookup).expect("load");
        assert_eq!(loaded.peer_id, env_identity.peer_id);
    }

    #[test]
    fn an_environment_id_must_match_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        Identity::generate().save(dir.path()).expect("save");
        let stranger = Identity::generate().peer_id.to_base58();
        let lookup = |var: &str| (var == ENV_ID).then(|| stranger.clone());
        let err = Identity::load_with_env(dir.path(), lookup).expect_err("mismatch");
        assert!(
            matches!(err, IdentityError::Env { var: ENV_ID, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_bad_environment_key_names_the_variable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lookup = |var: &str| (var == ENV_PRIVATE_KEY).then(|| "not base64!".to_string());
        let err = Identity::load_with_env(dir.path(), lookup).expect_err("bad key");
        assert!(err.to_string().contains(ENV_PRIVATE_KEY), "{err}");
    }
}
