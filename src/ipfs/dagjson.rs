//! DAG-JSON, as far as `dag/get` and `dag/put` need it: IPLD values to and
//! from JSON with links as `{"/": "<cid>"}` and bytes as
//! `{"/": {"bytes": "<base64, no padding>"}}`; dag-pb nodes shown in their
//! `{Data, Links: [{Hash, Name, Tsize}]}` form, as Kubo shows them.

use std::collections::BTreeMap;

use base64::Engine as _;
use cid::Cid;
use ipld_core::ipld::Ipld;
use serde_json::{Map, Value, json};

use super::pb::PbNode;

/// Base64 without padding (DAG-JSON bytes).
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(data)
}

/// Standard base64 with padding (Kubo's `PublicKey`).
pub fn b64_std(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// An IPLD value as DAG-JSON.
pub fn to_json(v: &Ipld) -> Value {
    match v {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => json!(b),
        Ipld::Integer(i) => i64::try_from(*i)
            .map(Value::from)
            .or_else(|_| u64::try_from(*i).map(Value::from))
            .unwrap_or(Value::Null),
        Ipld::Float(f) => json!(f),
        Ipld::String(s) => json!(s),
        Ipld::Bytes(b) => json!({"/": {"bytes": b64(b)}}),
        Ipld::List(items) => Value::Array(items.iter().map(to_json).collect()),
        Ipld::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Ipld::Link(c) => json!({"/": c.to_string()}),
    }
}

/// DAG-JSON into an IPLD value.
pub fn from_json(v: &Value) -> Result<Ipld, String> {
    Ok(match v {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Ipld::Integer(i.into()),
            (_, Some(u), _) => Ipld::Integer(u.into()),
            (_, _, Some(f)) => Ipld::Float(f),
            _ => return Err(format!("dag-json: bad number {n}")),
        },
        Value::String(s) => Ipld::String(s.clone()),
        Value::Array(items) => Ipld::List(items.iter().map(from_json).collect::<Result<_, _>>()?),
        Value::Object(m) => return object(m),
    })
}

fn object(m: &Map<String, Value>) -> Result<Ipld, String> {
    if let (1, Some(slash)) = (m.len(), m.get("/")) {
        match slash {
            Value::String(s) => {
                return Cid::try_from(s.as_str())
                    .map(Ipld::Link)
                    .map_err(|e| format!("dag-json: bad link {s:?}: {e}"));
            }
            Value::Object(inner) if inner.len() == 1 => {
                if let Some(Value::String(b)) = inner.get("bytes") {
                    return base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(b.trim_end_matches('='))
                        .map(Ipld::Bytes)
                        .map_err(|e| format!("dag-json: bad bytes: {e}"));
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for (k, v) in m {
        out.insert(k.clone(), from_json(v)?);
    }
    Ok(Ipld::Map(out))
}

/// A dag-pb node as Kubo's `dag/get` shows it.
pub fn pb_to_json(data: &[u8]) -> Result<Value, super::pb::PbError> {
    let node = PbNode::decode(data)?;
    let links: Vec<Value> = node
        .links
        .iter()
        .map(|l| {
            let mut o = Map::new();
            o.insert("Hash".into(), json!({"/": l.cid.to_string()}));
            if let Some(n) = &l.name {
                o.insert("Name".into(), json!(n));
            }
            if let Some(t) = l.tsize {
                o.insert("Tsize".into(), json!(t));
            }
            Value::Object(o)
        })
        .collect();
    let mut o = Map::new();
    if let Some(d) = &node.data {
        o.insert("Data".into(), json!({"/": {"bytes": b64(d)}}));
    }
    o.insert("Links".into(), Value::Array(links));
    Ok(Value::Object(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_bytes_round_trip() {
        let cid = crate::ipfs::dag::cid_for(crate::ipfs::dag::RAW, b"x", false);
        let v = json!({"a": {"/": cid.to_string()}, "b": {"/": {"bytes": "aGk"}}, "c": [1, "s"]});
        let ipld = from_json(&v).unwrap();
        assert_eq!(to_json(&ipld), v);
        assert!(from_json(&json!({"/": "not a cid"})).is_err());
    }
}
