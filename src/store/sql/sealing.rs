//! Secrets at rest: postback signing secrets and SIP passwords are stored encrypted
//! (XChaCha20-Poly1305, a random nonce per value), as `sb1:<base64 of nonce and ciphertext>`;
//! the prefix names the format, so another can follow. Reading decrypts; a value without the
//! prefix was stored before encryption and is read as it is, and encrypted at its next write.
//!
//! The key comes from `SECRETS_KEY` (the first of its keys seals; each opens, so a former key
//! can be kept while values are written again under the new one). Without it, a SQLite
//! database gets a key file beside it, made on first start (`<file>.secrets-key`, readable by
//! its owner only); an in-memory one a key for the process. PostgreSQL, shared by several
//! nodes, needs `SECRETS_KEY`: the server refuses to start without it (see `cli`); a store
//! opened without any key (tools, tests) keeps values as they are written.

use std::path::{Path, PathBuf};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, Generate, KeyInit},
};

use crate::{config::SecretsKey, store::StoreError};

const PREFIX: &str = "sb1:";
const NONCE: usize = 24;

/// Seals and opens stored secrets; without keys, leaves them as they are.
#[derive(Clone, Default)]
pub struct Sealer {
    /// The first seals; any opens.
    keys: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({} keys)", self.keys.len())
    }
}

impl Sealer {
    pub fn new(keys: &[SecretsKey]) -> Self {
        Self {
            keys: (keys.iter())
                .map(|key| XChaCha20Poly1305::new(&key.0.into()))
                .collect(),
        }
    }

    /// Whether values are encrypted when written.
    pub fn seals(&self) -> bool {
        !self.keys.is_empty()
    }

    pub fn seal(&self, plain: &str) -> Result<String, StoreError> {
        let Some(key) = self.keys.first() else {
            return Ok(plain.to_owned());
        };
        let nonce = XNonce::generate();
        let sealed = (key.encrypt(&nonce, plain.as_bytes()))
            .map_err(|_| StoreError::Corrupt("a secret could not be encrypted".into()))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", STANDARD.encode(bytes)))
    }

    /// `what` names the value in an error (never the value itself).
    pub fn open(&self, stored: &str, what: &str) -> Result<String, StoreError> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            // Stored before secrets were encrypted.
            return Ok(stored.to_owned());
        };
        let bytes = (STANDARD.decode(encoded).ok())
            .filter(|bytes| bytes.len() > NONCE)
            .ok_or_else(|| StoreError::Corrupt(format!("{what}: not an encrypted value")))?;
        let (nonce, sealed) = bytes.split_at(NONCE);
        let nonce = XNonce::try_from(nonce)
            .map_err(|_| StoreError::Corrupt(format!("{what}: not an encrypted value")))?;
        let opened = (self.keys.iter()).find_map(|key| key.decrypt(&nonce, sealed).ok());
        let opened = opened.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "{what} is encrypted with a key this server does not have (SECRETS_KEY)"
            ))
        })?;
        String::from_utf8(opened).map_err(|_| StoreError::Corrupt(format!("{what}: not text")))
    }

    /// `field` of every object in the JSON array `json` (postback endpoints' `secret`), sealed.
    pub fn seal_fields_in(&self, json: &str, field: &str) -> Result<String, StoreError> {
        self.each_field(json, field, &mut |value| self.seal(value))
    }

    /// `field` of every object in the JSON array `json`, opened.
    pub fn open_fields_in(&self, json: &str, field: &str, what: &str) -> Result<String, StoreError> {
        self.each_field(json, field, &mut |value| self.open(value, what))
    }

    /// Applies `change` to the string `field` of `json` (an object, or an array of objects).
    fn each_field(
        &self,
        json: &str,
        field: &str,
        change: &mut dyn FnMut(&str) -> Result<String, StoreError>,
    ) -> Result<String, StoreError> {
        let mut value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{field}: {e}")))?;
        let objects: Vec<&mut serde_json::Value> = match &mut value {
            serde_json::Value::Array(items) => items.iter_mut().collect(),
            other => vec![other],
        };
        for object in objects {
            if let Some(serde_json::Value::String(text)) = object.get_mut(field) {
                *text = change(text)?;
            }
        }
        Ok(value.to_string())
    }
}

/// The key file of a SQLite database URL (`sqlite://dir/file.db?…` → `dir/file.db.secrets-key`);
/// `None` for an in-memory database.
pub fn key_file_of(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("sqlite:")?.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(format!("{path}.secrets-key")))
}

/// The key in `path`, made (32 random bytes, in base64, readable by its owner only) if there
/// is none yet.
pub fn key_from_file(path: &Path) -> std::io::Result<SecretsKey> {
    use std::io::Write;
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            let key: [u8; 32] = rand::random();
            file.write_all(STANDARD.encode(key).as_bytes())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "made a key for the secrets stored in this database; back it up with the database");
            Ok(SecretsKey(key))
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            SecretsKey::parse(&std::fs::read_to_string(path)?).map_err(invalid)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretsKey {
        SecretsKey([byte; 32])
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_or_a_former_one_only() {
        let sealer = Sealer::new(&[key(1)]);
        let sealed = sealer.seal("whsec_0123456789abcdef").unwrap();
        assert!(
            sealed.starts_with("sb1:") && !sealed.contains("whsec"),
            "{sealed}"
        );
        assert_ne!(
            sealed,
            sealer.seal("whsec_0123456789abcdef").unwrap(),
            "a nonce per value"
        );
        assert_eq!(sealer.open(&sealed, "x").unwrap(), "whsec_0123456789abcdef");

        let rotated = Sealer::new(&[key(2), key(1)]);
        assert_eq!(rotated.open(&sealed, "x").unwrap(), "whsec_0123456789abcdef");
        let err = Sealer::new(&[key(2)]).open(&sealed, "the secret").unwrap_err();
        assert!(err.to_string().contains("SECRETS_KEY"), "{err}");

        let mut tampered = sealed.clone();
        tampered.replace_range(10..11, if &sealed[10..11] == "A" { "B" } else { "A" });
        assert!(sealer.open(&tampered, "x").is_err(), "authenticated");
        assert_eq!(sealer.open("stored-in-clear", "x").unwrap(), "stored-in-clear");
    }

    #[test]
    fn fields_of_json_are_sealed_in_place() {
        let sealer = Sealer::new(&[key(1)]);
        let json = r#"[{"url":"https://a.example/","secret":"whsec_0123456789abcdef"}]"#;
        let sealed = sealer.seal_fields_in(json, "secret").unwrap();
        assert!(
            sealed.contains("https://a.example/") && !sealed.contains("whsec"),
            "{sealed}"
        );
        let opened = sealer.open_fields_in(&sealed, "secret", "x").unwrap();
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        assert_eq!(parse(&opened), parse(json));
    }

    #[test]
    fn a_sqlite_file_has_its_key_beside_it() {
        assert_eq!(
            key_file_of("sqlite://data/switchboard.db?mode=rwc"),
            Some(PathBuf::from("data/switchboard.db.secrets-key"))
        );
        assert_eq!(key_file_of("sqlite::memory:"), None);
        assert_eq!(key_file_of("postgres://db/x"), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db.secrets-key");
        let made = key_from_file(&path).unwrap();
        assert_eq!(key_from_file(&path).unwrap().0, made.0, "made once, then read");
    }
}
