//! Twilio's request signature (`X-Twilio-Signature`): proof that a webhook came from the account
//! holding the auth token, over the exact URL requested and every form parameter.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha1,
    HmacSha256,
}

/// How a webhook was signed, as `X-Twilio-Webhooks-Signature-Settings` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// No settings header: the account's auth token, HMAC-SHA1.
    AuthToken,
    /// A Webhook Rule matched the URL: the secret of the shared key it names (`key=`), with the
    /// algorithm it names.
    SharedKey {
        key: Option<String>,
        algorithm: Algorithm,
    },
}

impl Signing {
    /// Reads `X-Twilio-Webhooks-Signature-Settings` (`key=<id>,algorithm=HMAC_SHA256`). A header
    /// without a known algorithm is refused: guessing one would accept what Twilio never signed
    /// or refuse what it did, and either must be seen, not papered over.
    pub fn from_settings(header: Option<&str>) -> Result<Self, String> {
        let Some(header) = header else {
            return Ok(Self::AuthToken);
        };
        let field = |name: &str| {
            (header.split(','))
                .filter_map(|part| part.split_once('='))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
                .map(|(_, value)| value.trim().to_owned())
        };
        let algorithm = match field("algorithm").map(|a| a.to_ascii_uppercase()).as_deref() {
            Some("HMAC_SHA256") => Algorithm::HmacSha256,
            Some("HMAC_SHA1") => Algorithm::HmacSha1,
            Some(other) => {
                return Err(format!(
                    "the signature algorithm {other:?} is not one Twilio documents"
                ));
            }
            None => return Err("the signature settings name no algorithm".to_owned()),
        };
        Ok(Self::SharedKey {
            key: field("key").filter(|key| !key.is_empty()),
            algorithm,
        })
    }
}

/// The string that is signed: the URL, then each parameter name followed by its value, names in
/// byte order, a name's values sorted and each once, no delimiters.
fn signed_payload(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut payload = String::with_capacity(url.len() + params.len() * 24);
    payload.push_str(url);
    for (name, value) in sorted {
        payload.push_str(name);
        payload.push_str(value);
    }
    payload
}

/// The signature Twilio would send for this request.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)], algorithm: Algorithm) -> String {
    let payload = signed_payload(url, params);
    let digest = match algorithm {
        Algorithm::HmacSha1 => mac::<Hmac<sha1::Sha1>>(auth_token, &payload),
        Algorithm::HmacSha256 => mac::<Hmac<sha2::Sha256>>(auth_token, &payload),
    };
    STANDARD.encode(digest)
}

/// The HMAC of `payload` keyed with `key`.
pub(crate) fn mac<M: Mac + KeyInit>(key: &str, payload: &str) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    match <M as KeyInit>::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(payload.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Whether `signature` is valid for this request. As Twilio's own libraries do, the URL is tried
/// with its port removed and with the scheme's default port added: either passing is enough.
pub fn is_valid(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
    algorithm: Algorithm,
) -> bool {
    let (without_port, with_port) = port_variants(url);
    [without_port, with_port].iter().any(|candidate| {
        let expected = sign(auth_token, candidate, params, algorithm);
        bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
    })
}

/// Whether a JSON body is the one signed for. A JSON body is not signed as parameters: the URL
/// carries `bodySHA256`, the hex SHA-256 of the raw body, and the signature covers the URL alone
/// (so [`is_valid`] is called with no parameters).
pub fn body_matches(url: &str, body: &[u8]) -> bool {
    let url = url.split('#').next().unwrap_or(url);
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let declared: Option<String> = (serde_urlencoded::from_str::<Vec<(String, String)>>(query).ok())
        .and_then(|pairs| pairs.into_iter().find(|(name, _)| name == "bodySHA256"))
        .map(|(_, value)| value.to_ascii_lowercase());
    let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body));
    declared.is_some_and(|declared| bool::from(declared.as_bytes().ct_eq(actual.as_bytes())))
}

/// The URL without its port, and with the scheme's default port when it has none.
fn port_variants(url: &str) -> (String, String) {
    let url = url.split('#').next().unwrap_or(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), url.to_owned());
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The port follows the last `:` after an IPv6 literal's closing bracket, if any.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    let (host, port) = match authority[host_end..].rfind(':') {
        Some(i) => authority.split_at(host_end + i),
        None => (authority, ""),
    };
    let without = format!("{scheme}://{host}{tail}");
    let with = if port.is_empty() {
        let default = if scheme.eq_ignore_ascii_case("https") {
            ":443"
        } else {
            ":80"
        };
        format!("{scheme}://{host}{default}{tail}")
    } else {
        url.to_owned()
    };
    (without, with)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn reference_params() -> Vec<(String, String)> {
        params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    /// The vectors of the project's reference (recomputed with twilio-python 9.13.0).
    #[test]
    fn every_reference_vector_validates() {
        let p = reference_params();
        type Vector = (&'static str, Vec<(String, String)>, &'static str, Algorithm);
        let cases: [Vector; 7] = [
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                p.clone(),
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
                Algorithm::HmacSha1,
            ),
            (
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                p.clone(),
                "kvajT1Ptam85bY51eRf/AJRuM3w=",
                Algorithm::HmacSha1,
            ),
            (
                "http://mycompany.com:80/myapp.php?foo=1&bar=2",
                p.clone(),
                "0ZXoZLH/DfblKGATFgpif+LLRf4=",
                Algorithm::HmacSha1,
            ),
            (
                "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
                p.clone(),
                "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
                Algorithm::HmacSha1,
            ),
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                p.clone(),
                "033hgUJA9M/hXIZsYjwkerEP/DBm35nEri5FhCYjA5s=",
                Algorithm::HmacSha256,
            ),
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                params(&[
                    ("Sid", "CA123"),
                    ("SidAccount", "AC123"),
                    ("Digits", "5678"),
                    ("Digits", "1234"),
                ]),
                "IK+Dwps556ElfBT0I3Rgjkr1wJU=",
                Algorithm::HmacSha1,
            ),
            (
                "https://example.com/voice",
                params(&[
                    ("CallSid", "CA1"),
                    ("CallerName", "José Ñ"),
                    ("ForwardedFrom", ""),
                    ("From", "+15551230000"),
                ]),
                "wLYw3mcmLbkJC6ITehHLQGLNxpI=",
                Algorithm::HmacSha1,
            ),
        ];
        for (url, params, signature, algorithm) in cases {
            assert!(
                is_valid("12345", url, &params, signature, algorithm),
                "{url} {signature}"
            );
        }
    }

    #[test]
    fn the_signed_string_matches_the_reference() {
        assert_eq!(
            signed_payload("https://mycompany.com/myapp.php?foo=1&bar=2", &reference_params()),
            "https://mycompany.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675309Digits1234From+14158675309To+18005551212"
        );
    }

    #[test]
    fn the_first_vector_also_validates_when_the_request_carried_the_default_port() {
        let p = reference_params();
        assert!(is_valid(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &p,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            Algorithm::HmacSha1
        ));
    }

    #[test]
    fn anything_changed_fails() {
        let p = reference_params();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert!(
            !is_valid("54321", url, &p, good, Algorithm::HmacSha1),
            "another token"
        );
        assert!(!is_valid(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &p,
            good,
            Algorithm::HmacSha1
        ));
        let mut tampered = p.clone();
        tampered[4].1 = "+19005551212".into();
        assert!(!is_valid("12345", url, &tampered, good, Algorithm::HmacSha1));
        let mut extra = p.clone();
        extra.push(("Injected".into(), "1".into()));
        assert!(!is_valid("12345", url, &extra, good, Algorithm::HmacSha1));
        assert!(!is_valid("12345", url, &p, "", Algorithm::HmacSha1));
        assert!(
            !is_valid("12345", url, &p, good, Algorithm::HmacSha256),
            "the wrong algorithm"
        );
    }

    #[test]
    fn a_json_body_is_signed_through_its_hash_in_the_url() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        let url = format!("https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={hash}");
        assert!(body_matches(&url, body));
        let signature = "a9nBmqA0ju/hNViExpshrM61xv4=";
        assert!(is_valid("12345", &url, &[], signature, Algorithm::HmacSha1));

        assert!(
            !body_matches(&url, br#"{"property": "other", "boolean": true}"#),
            "another body"
        );
        assert!(
            !body_matches("https://mycompany.com/myapp.php?foo=1", body),
            "no hash in the URL"
        );
        let upper = url.replace(hash, &hash.to_uppercase());
        assert!(body_matches(&upper, body), "hex digits in either case");
    }

    #[test]
    fn the_settings_header_names_the_shared_key_and_its_algorithm() {
        assert_eq!(Signing::from_settings(None), Ok(Signing::AuthToken));
        let sha256 = |key: Option<&str>| Signing::SharedKey {
            key: key.map(str::to_owned),
            algorithm: Algorithm::HmacSha256,
        };
        assert_eq!(
            Signing::from_settings(Some("key=KS0123,algorithm=HMAC_SHA256")),
            Ok(sha256(Some("KS0123")))
        );
        assert_eq!(
            Signing::from_settings(Some(" algorithm = hmac_sha256 ")),
            Ok(sha256(None))
        );
        assert_eq!(
            Signing::from_settings(Some("key=KS1,algorithm=HMAC_SHA1")),
            Ok(Signing::SharedKey {
                key: Some("KS1".into()),
                algorithm: Algorithm::HmacSha1
            })
        );
        for refused in ["key=KS1,algorithm=HMAC_SHA512", "key=KS1", ""] {
            assert!(Signing::from_settings(Some(refused)).is_err(), "{refused:?}");
        }
    }

    /// Signatures made with a shared key's secret rather than the auth token, as Twilio signs
    /// webhooks a Webhook Rule matches: the reference's first request, its string signed as
    /// twilio-python's `compute_signature` signs it (`base64(hmac(secret, url + params))`; the
    /// same computation reproduces the reference's auth-token HMAC-SHA256 vector).
    #[test]
    fn shared_key_vectors_validate_with_their_secret_only() {
        let p = reference_params();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let cases = [
            (
                "whsk_shared_key_secret_0001",
                "5MbKrvezrgbp2ALBi2pUMe2y/aIVtno97+cPUO0hqpU=",
                Algorithm::HmacSha256,
            ),
            (
                "whsk_shared_key_secret_0001",
                "F0/uG3A2ouj8CkMDJdWFmW/XwZ0=",
                Algorithm::HmacSha1,
            ),
            (
                "whsk_shared_key_secret_0002",
                "UyZHTJCZFPnDeylVhwCJs0dT/R0fwthOKU+X9PL+cas=",
                Algorithm::HmacSha256,
            ),
        ];
        for (secret, signature, algorithm) in cases {
            assert!(
                is_valid(secret, url, &p, signature, algorithm),
                "{secret} {signature}"
            );
            assert!(
                !is_valid("12345", url, &p, signature, algorithm),
                "not the auth token's"
            );
        }
    }

    #[test]
    fn port_variants_handle_ipv6_and_fragments() {
        assert_eq!(
            port_variants("https://[::1]:8443/voice?x=1#frag"),
            (
                "https://[::1]/voice?x=1".to_owned(),
                "https://[::1]:8443/voice?x=1".to_owned()
            )
        );
        assert_eq!(
            port_variants("http://example.com?x=1"),
            (
                "http://example.com?x=1".to_owned(),
                "http://example.com:80?x=1".to_owned()
            )
        );
    }
}
