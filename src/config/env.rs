//! `CLUSTER_*` environment overrides, applied to the JSON form of the
//! configuration and read back.

use serde_json::{Map, Value};

use super::json::read_config;
use super::{Config, ConfigError};

#[derive(Debug, Clone, Copy)]
enum EnvKind {
    Str,
    Bool,
    Number,
    List,
    Map,
}

/// Keys that the JSON form leaves out (or writes as null) when unset, with
/// the kind of value they take, so that a variable can still set them.
const OPTIONAL_KEYS: &[(&str, &str, EnvKind)] = &[
    ("cluster", "follower_mode", EnvKind::Bool),
    ("cluster", "peerstore_file", EnvKind::Str),
    ("api.restapi", "ssl_cert_file", EnvKind::Str),
    ("api.restapi", "ssl_key_file", EnvKind::Str),
    ("api.restapi", "libp2p_listen_multiaddress", EnvKind::List),
    ("api.restapi", "id", EnvKind::Str),
    ("api.restapi", "private_key", EnvKind::Str),
    ("api.restapi", "basic_auth_credentials", EnvKind::Map),
    ("api.pinsvcapi", "ssl_cert_file", EnvKind::Str),
    ("api.pinsvcapi", "ssl_key_file", EnvKind::Str),
    ("api.pinsvcapi", "libp2p_listen_multiaddress", EnvKind::List),
    ("api.pinsvcapi", "id", EnvKind::Str),
    ("api.pinsvcapi", "private_key", EnvKind::Str),
    ("api.pinsvcapi", "basic_auth_credentials", EnvKind::Map),
    ("api.ipfsproxy", "node_https", EnvKind::Bool),
    ("ipfs_connector.ipfshttp", "unpin_disable", EnvKind::Bool),
];

/// Objects that are maps of user data rather than groups of keys.
const MAP_KEYS: [&str; 3] = ["tags", "basic_auth_credentials", "headers"];

fn env_word(name: &str) -> String {
    name.replace('_', "").to_uppercase()
}

fn env_walk(
    map: &mut Map<String, Value>,
    path: &str,
    prefix: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    applied: &mut Vec<(String, String)>,
) -> Result<(), ConfigError> {
    for (_, key, _) in OPTIONAL_KEYS.iter().filter(|(p, _, _)| *p == path) {
        map.entry(key.to_string()).or_insert(Value::Null);
    }
    for (key, value) in map.iter_mut() {
        // Headers map to lists: no textual form was ever defined for them.
        if key == "//" || key == "headers" {
            continue;
        }
        let var = format!("{prefix}_{}", env_word(key));
        let key_path = format!("{path}.{key}");
        if let Value::Object(inner) = value
            && !MAP_KEYS.contains(&key.as_str())
        {
            env_walk(inner, &key_path, &var, lookup, applied)?;
            continue;
        }
        let Some(text) = lookup(&var).filter(|t| !t.is_empty()) else {
            continue;
        };
        let kind = match value {
            // A single address is written as a string, but the key is a list.
            Value::String(_) if is_address_list(key) => EnvKind::List,
            Value::String(_) => EnvKind::Str,
            Value::Bool(_) => EnvKind::Bool,
            Value::Number(_) => EnvKind::Number,
            Value::Array(_) => EnvKind::List,
            Value::Object(_) => EnvKind::Map,
            Value::Null => match OPTIONAL_KEYS
                .iter()
                .find(|(p, k, _)| *p == path && k == key)
            {
                Some((_, _, kind)) => *kind,
                None => continue,
            },
        };
        *value = env_value(kind, &text).map_err(|problem| ConfigError::Env {
            var: var.clone(),
            problem,
        })?;
        applied.push((key_path, var));
    }
    Ok(())
}

/// The reference's "Strings" address fields (a string or an array in JSON).
fn is_address_list(key: &str) -> bool {
    key.ends_with("listen_multiaddress") || key.ends_with("announce_multiaddress")
}

fn env_value(kind: EnvKind, text: &str) -> Result<Value, String> {
    Ok(match kind {
        EnvKind::Str => Value::String(text.to_string()),
        EnvKind::Bool => Value::Bool(match text {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            _ => return Err(format!("{text:?} is not a boolean (true or false)")),
        }),
        EnvKind::Number => {
            let number = text
                .parse::<i64>()
                .map(serde_json::Number::from)
                .or_else(|_| text.parse::<u64>().map(serde_json::Number::from))
                .ok()
                .or_else(|| {
                    text.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                });
            Value::Number(number.ok_or_else(|| format!("{text:?} is not a number"))?)
        }
        EnvKind::List => Value::Array(
            text.split(',')
                .map(|item| Value::String(item.trim().to_string()))
                .collect(),
        ),
        EnvKind::Map => {
            let mut map = Map::new();
            for pair in text.split(',') {
                let (k, v) = pair
                    .split_once(':')
                    .ok_or_else(|| format!("{pair:?} is not a key:value pair"))?;
                map.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
            }
            Value::Object(map)
        }
    })
}

/// Turns an error about an overridden key into one naming its variable.
fn blame_env(err: ConfigError, applied: &[(String, String)]) -> ConfigError {
    if let ConfigError::Invalid { key, problem } = &err {
        for (path, var) in applied {
            let inside = key
                .strip_prefix(path.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['[', '.']));
            if inside {
                return ConfigError::Env {
                    var: var.clone(),
                    problem: format!("{key}: {problem}"),
                };
            }
        }
    }
    err
}

impl Config {
    /// Applies `CLUSTER_*` overrides found through `lookup` (spec §4.2).
    ///
    /// The variable for a key is `CLUSTER_` + component + key path, upper
    /// case, underscores inside names removed: `cluster.listen_multiaddress`
    /// is `CLUSTER_LISTENMULTIADDRESS`, `consensus.crdt.batching.max_batch_size`
    /// is `CLUSTER_CRDT_BATCHING_MAXBATCHSIZE`. Lists are comma-separated, maps
    /// are `k:v,k2:v2`, booleans as Go's `strconv.ParseBool`. Empty variables
    /// count as unset.
    ///
    /// Like the reference (envconfig on its JSON-shaped structs), overrides
    /// are applied to the JSON form and re-read, so the file's rules hold for
    /// them too: `0` keeps a default, and a component absent from the file is
    /// not created by a variable. Does not validate: call
    /// [`Config::validate`] after.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let mut root = serde_json::to_value(&*self).expect("the configuration always serializes");
        let mut applied = Vec::new();
        if let Value::Object(sections) = &mut root {
            for (section, value) in sections.iter_mut() {
                let Value::Object(components) = value else {
                    continue;
                };
                if section == "cluster" {
                    env_walk(components, "cluster", "CLUSTER", &lookup, &mut applied)?;
                    continue;
                }
                for (component, value) in components.iter_mut() {
                    if let Value::Object(keys) = value {
                        let path = format!("{section}.{component}");
                        let prefix = format!("CLUSTER_{}", env_word(component));
                        env_walk(keys, &path, &prefix, &lookup, &mut applied)?;
                    }
                }
            }
        }
        if applied.is_empty() {
            return Ok(());
        }
        // The JSON form of a valid configuration reads back without warnings;
        // only the overridden values can fail here, so errors name their variable.
        let mut ignored = Vec::new();
        *self = read_config(&root, &mut ignored).map_err(|e| blame_env(e, &applied))?;
        Ok(())
    }
}
