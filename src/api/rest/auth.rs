//! Authentication as the reference does it: HTTP basic auth against
//! `basic_auth_credentials`, or a bearer JWT signed (HMAC) with the
//! password of the user named in its `iss` claim. `POST /token` issues
//! such tokens: HS256, claims `{"iss": user}` only, so a token lives until
//! its user's password changes.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};

use super::reply::error;

const REALM: &str = "Restricted IPFS Cluster API";

/// The configured users and their passwords.
pub struct Auth {
    users: BTreeMap<String, String>,
}

// Hand-written so that passwords never reach a log line.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Basic credentials that do not match.
    Basic,
    /// A bearer token that does not verify.
    Token,
    /// No credentials at all.
    Missing,
}

impl Denied {
    /// The 401 the reference answers, with its `WWW-Authenticate` headers.
    pub fn response(self) -> warp::reply::Response {
        let (message, challenges): (&str, &[String]) = match self {
            Denied::Basic => (
                "unauthorized: access denied",
                &[format!("Basic realm=\"{REALM}\"")],
            ),
            Denied::Token => (
                "unauthorized: invalid token",
                &[format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"")],
            ),
            Denied::Missing => (
                "unauthorized: no auth provided",
                &[
                    format!("Bearer realm=\"{REALM}\""),
                    format!("Basic realm=\"{REALM}\""),
                ],
            ),
        };
        let mut res = error(StatusCode::UNAUTHORIZED, message.to_string());
        for c in challenges {
            if let Ok(v) = HeaderValue::try_from(c.as_str()) {
                res.headers_mut().append(header::WWW_AUTHENTICATE, v);
            }
        }
        res
    }
}

#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
}

/// The registered claims we check; others are ignored.
#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
}

impl Auth {
    /// Users and passwords from `basic_auth_credentials`.
    pub fn new(users: BTreeMap<String, String>) -> Auth {
        Auth { users }
    }

    /// The user a request authenticates as.
    pub fn check(&self, headers: &HeaderMap) -> Result<String, Denied> {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Err(Denied::Missing);
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            self.verify(rest.trim(), chrono::Utc::now().timestamp())
                .ok_or(Denied::Token)
        } else if scheme.eq_ignore_ascii_case("basic") {
            self.basic(rest.trim()).ok_or(Denied::Basic)
        } else {
            Err(Denied::Missing)
        }
    }

    fn basic(&self, encoded: &str) -> Option<String> {
        let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
        let (user, password) = decoded.split_once(':')?;
        let expected = self.users.get(user)?;
        (!user.is_empty()
            && !password.is_empty()
            && bool::from(expected.as_bytes().ct_eq(password.as_bytes())))
        .then(|| user.to_string())
    }

    /// The issuer of a valid token, checked at Unix time `now`.
    fn verify(&self, token: &str, now: i64) -> Option<String> {
        let mut parts = token.split('.');
        let (head, body, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: JwtHeader = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).ok()?).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        let user = claims.iss?;
        let password = self.users.get(&user)?;
        let signed = format!("{head}.{body}");
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        if !signed_by(&header.alg, password.as_bytes(), signed.as_bytes(), &sig) {
            return None;
        }
        let now = now as f64;
        let fresh = claims.exp.is_none_or(|exp| now < exp)
            && claims.nbf.is_none_or(|nbf| now >= nbf)
            && claims.iat.is_none_or(|iat| now >= iat);
        fresh.then_some(user)
    }

    /// A token for `user` (who must exist).
    pub fn token(&self, user: &str) -> Option<String> {
        let password = self.users.get(user)?;
        let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::json!({ "iss": user }).to_string());
        let signed = format!("{head}.{body}");
        let sig = sign("HS256", password.as_bytes(), signed.as_bytes())?;
        Some(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// The signature of `msg` under `key` with the JWT algorithm `alg`, for
/// the algorithms the reference accepts; `None` for any other (`none`,
/// RSA, ...).
fn sign(alg: &str, key: &[u8], msg: &[u8]) -> Option<Vec<u8>> {
    match alg {
        "HS256" => Some(hmac::<Hmac<Sha256>>(key, msg)),
        "HS384" => Some(hmac::<Hmac<Sha384>>(key, msg)),
        "HS512" => Some(hmac::<Hmac<Sha512>>(key, msg)),
        _ => None,
    }
}

fn hmac<M: Mac + KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Whether `sig` signs `msg` with `alg` under `key`, compared in constant
/// time so that a forger learns nothing from how long a refusal takes.
fn signed_by(alg: &str, key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    sign(alg, key, msg).is_some_and(|expected| bool::from(expected.ct_eq(sig)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(BTreeMap::from([(
            "alice".to_string(),
            "secret".to_string(),
        )]))
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = sign("HS256", b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let a = auth();
        let token = a.token("alice").unwrap();
        assert_eq!(a.verify(&token, 0).as_deref(), Some("alice"));
        let mut forged = token.clone();
        forged.push('x');
        assert_eq!(a.verify(&forged, 0), None);
        // Signed with another key.
        let other = Auth::new(BTreeMap::from([("alice".to_string(), "guess".to_string())]));
        assert_eq!(a.verify(&other.token("alice").unwrap(), 0), None);
    }

    #[test]
    fn expiry_and_algorithm_are_enforced() {
        let a = auth();
        let make = |alg: &str, claims: &str| {
            let head = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
            let body = URL_SAFE_NO_PAD.encode(claims);
            let signed = format!("{head}.{body}");
            let sig = sign(alg, b"secret", signed.as_bytes()).unwrap_or_default();
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
        };
        let expiring = make("HS512", r#"{"iss":"alice","exp":100}"#);
        assert_eq!(a.verify(&expiring, 99).as_deref(), Some("alice"));
        assert_eq!(a.verify(&expiring, 100), None);
        assert_eq!(
            a.verify(&make("HS256", r#"{"iss":"alice","nbf":50}"#), 10),
            None
        );
        assert_eq!(a.verify(&make("none", r#"{"iss":"alice"}"#), 0), None);
        assert_eq!(a.verify(&make("HS256", r#"{"iss":"bob"}"#), 0), None);
    }

    #[test]
    fn basic_needs_user_and_password() {
        let a = auth();
        assert_eq!(
            a.basic(&STANDARD.encode("alice:secret")).as_deref(),
            Some("alice")
        );
        assert_eq!(a.basic(&STANDARD.encode("alice:wrong")), None);
        assert_eq!(a.basic(&STANDARD.encode("alice:")), None);
        assert_eq!(a.basic("%%%"), None);
    }
}
