//! URL queries and path segments decoded as Go's `net/url` reads them,
//! for the REST API and the IPFS proxy (and the fake Kubo of the tests).

/// Decodes `a=1&b=2` (percent-decoding, `+` as space) keeping order and
/// repeats, which the pin options need (`meta-*`).
pub fn url_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// A query key or value: `+` is a space, as Go's `url.ParseQuery` reads it.
pub(crate) fn form_decode(s: &str) -> String {
    percent_decode(s, true)
}

/// A piece of a URL path: `+` is itself, as Go's `url.PathUnescape` reads
/// it (`/pins/ipfs/<cid>/a+b` names the file `a+b`).
pub(crate) fn path_decode(s: &str) -> String {
    percent_decode(s, false)
}

/// `%XX` escapes decoded (a malformed one is kept as it is), and `+` as a
/// space when `plus_is_space`.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_keep_order_repeats_and_decode() {
        assert_eq!(
            url_pairs("name=a+b%21&meta-k=1&meta-k=2&empty="),
            vec![
                ("name".to_string(), "a b!".to_string()),
                ("meta-k".to_string(), "1".to_string()),
                ("meta-k".to_string(), "2".to_string()),
                ("empty".to_string(), String::new()),
            ]
        );
        assert_eq!(form_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn paths_keep_plus_signs() {
        assert_eq!(path_decode("a+b%20c%2B"), "a+b c+");
        assert_eq!(path_decode("a&b=c"), "a&b=c");
    }
}
