//! The repository config: the one plaintext, mutable object (`config`, JSON). It says how to
//! read everything else: format version, chunker parameters, default compression, encryption
//! mode and (repokey) the wrapped master key.
//!
//! Whoever holds the storage can edit it, so in an encrypted repository every field is covered
//! by `mac`: keyed BLAKE3 (a key derived from the master key) over the config's JSON object
//! without `mac`, in a canonical form (`mac_input`: keys sorted, compact). Fields this version
//! does not know are covered too, so a newer writer's additions still verify here and an
//! attacker's do not. It is verified on open, after the key is unwrapped; an edited field, a
//! swapped key or a dropped `mac` in a repository the client knows as authenticated is refused. An unencrypted config has no key to authenticate with;
//! the client's security record (`trust`) is what stops it from being a downgrade.

use super::compression::Compression;
use super::crypto::Crypto;
use super::error::{RepoError, Result};
use super::id::RepoId;
use super::key::WrappedKey;
use serde::{Deserialize, Serialize};

/// The repository format this proxborg writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkerParams {
    /// File contents and streams: FastCDC v2020, 256 KiB / 1 MiB / 4 MiB (DESIGN.md).
    pub const CONTENT: ChunkerParams = ChunkerParams {
        min: 256 << 10,
        avg: 1 << 20,
        max: 4 << 20,
    };
    /// The item stream: small chunks, so similar archives share most metadata blobs.
    pub const METADATA: ChunkerParams = ChunkerParams {
        min: 16 << 10,
        avg: 64 << 10,
        max: 256 << 10,
    };

    /// fastcdc only debug-asserts its limits; an odd or out-of-range value from a damaged
    /// config would silently shift cut points, so check here.
    pub fn validate(&self) -> Result<()> {
        let ok = self.min % 2 == 0
            && self.avg % 2 == 0
            && self.max % 2 == 0
            && (64..=1 << 20).contains(&self.min)
            && (256..=4 << 20).contains(&self.avg)
            && (1024..=16 << 20).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(RepoError::corrupt(
                "config",
                format!("invalid chunker parameters {self:?}"),
            ))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionMode {
    None,
    Repokey,
    Keyfile,
}

impl std::str::FromStr for EncryptionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(EncryptionMode::None),
            "repokey" => Ok(EncryptionMode::Repokey),
            "keyfile" => Ok(EncryptionMode::Keyfile),
            _ => Err(format!(
                "invalid encryption mode {s:?}: expected none, repokey or keyfile"
            )),
        }
    }
}

impl std::fmt::Display for EncryptionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EncryptionMode::None => "none",
            EncryptionMode::Repokey => "repokey",
            EncryptionMode::Keyfile => "keyfile",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: u32,
    /// Random, hex; names the client cache directory, the security record and the key file.
    pub id: RepoId,
    pub chunker: ChunkerParams,
    pub compression: Compression,
    pub encryption: EncryptionMode,
    /// Only in `repokey` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<WrappedKey>,
    #[serde(default)]
    pub append_only: bool,
    /// Raised by one at every rewrite of the config. A client's security record keeps the
    /// highest it has seen, so an older copy put back in place (a rollback, e.g. of
    /// append-only mode) is refused. Absent (0) until the first rewrite.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// Encrypted repositories: hex keyed BLAKE3 of `mac_input` (see the module comment).
    /// Absent in configs written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RepoConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        // Read the version first so a newer format gets "upgrade proxborg", not a parse error.
        #[derive(Deserialize)]
        struct VersionOnly {
            format: u32,
        }
        let v: VersionOnly = serde_json::from_slice(bytes)
            .map_err(|e| RepoError::corrupt("config", format!("not a proxborg config: {e}")))?;
        if v.format > FORMAT_VERSION {
            return Err(RepoError::UnsupportedVersion {
                found: v.format,
                supported: FORMAT_VERSION,
            });
        }
        let c: RepoConfig = serde_json::from_slice(bytes)
            .map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        c.chunker.validate()?;
        if (c.encryption == EncryptionMode::Repokey) != c.key.is_some() {
            return Err(RepoError::corrupt(
                "config",
                "repokey mode needs exactly one wrapped key",
            ));
        }
        if c.encryption == EncryptionMode::None && c.mac.is_some() {
            return Err(RepoError::corrupt(
                "config",
                "an unencrypted repository has no authentication code",
            ));
        }
        Ok(c)
    }

    /// Sets `mac` for this config's current contents (none when unencrypted).
    pub fn authenticate(&mut self, crypto: &Crypto) {
        self.mac = None;
        let value = serde_json::to_value(&*self).expect("config serializes");
        self.mac = crypto
            .config_mac(&mac_input(value))
            .map(|h| h.to_hex().to_string());
    }

    /// Checks `mac` against the unlocked key; `raw` is the config file this was parsed from.
    /// `Ok(true)`: present and valid; `Ok(false)`: unencrypted, or an encrypted config written
    /// before configs were authenticated (the caller decides, with the security record,
    /// whether that is acceptable).
    pub fn verify(&self, raw: &[u8], crypto: &Crypto) -> Result<bool> {
        let Some(mac) = &self.mac else {
            return Ok(false);
        };
        let value: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        let Some(expected) = crypto.config_mac(&mac_input(value)) else {
            return Ok(false);
        };
        let found = blake3::Hash::from_hex(mac).map_err(|_| {
            RepoError::corrupt("config", "authentication code is not 64 hex digits")
        })?;
        // blake3::Hash compares in constant time
        if found != expected {
            return Err(RepoError::corrupt(
                "config",
                "authentication failed: it was changed without the repository key, or damaged",
            ));
        }
        Ok(true)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("config serializes");
        v.push(b'\n');
        v
    }
}

/// What `mac` authenticates: a domain tag, then the config object without `mac`, every
/// object's keys sorted, as compact JSON.
fn mac_input(mut config: serde_json::Value) -> Vec<u8> {
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<_> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
    if let Some(m) = config.as_object_mut() {
        m.remove("mac");
    }
    let mut v = b"proxborg config mac v1\n".to_vec();
    v.extend_from_slice(&serde_json::to_vec(&sorted(config)).expect("JSON serializes"));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RepoConfig {
        RepoConfig {
            format: FORMAT_VERSION,
            id: RepoId::from_bytes(&[0xab; 16]),
            chunker: ChunkerParams::CONTENT,
            compression: Compression::default(),
            encryption: EncryptionMode::None,
            key: None,
            append_only: false,
            generation: 0,
            mac: None,
        }
    }

    fn keyfile_sample() -> (RepoConfig, Crypto) {
        let mut c = sample();
        c.encryption = EncryptionMode::Keyfile;
        let crypto = Crypto::encrypted(super::super::key::Keys::derive(&[6u8; 32]));
        c.authenticate(&crypto);
        (c, crypto)
    }

    #[test]
    fn every_field_of_an_encrypted_config_is_authenticated() {
        let (c, crypto) = keyfile_sample();
        let parsed = RepoConfig::parse(&c.to_bytes()).unwrap();
        assert!(parsed.verify(&c.to_bytes(), &crypto).unwrap());
        let edits: [fn(&mut RepoConfig); 5] = [
            |c| c.id = RepoId::from_bytes(&[0xcd; 16]),
            |c| c.chunker.avg /= 2,
            |c| c.compression = Compression::None,
            |c| c.append_only = true,
            |c| c.format = 0,
        ];
        for edit in edits {
            let mut bad = parsed.clone();
            edit(&mut bad);
            let raw = bad.to_bytes();
            let err = RepoConfig::parse(&raw)
                .unwrap()
                .verify(&raw, &crypto)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("config") && err.contains("authentication failed"),
                "{err}"
            );
        }
        // another key's MAC does not verify either
        let other = Crypto::encrypted(super::super::key::Keys::derive(&[7u8; 32]));
        assert!(parsed.verify(&c.to_bytes(), &other).is_err());
        // a config without one (written before MACs existed) is for the caller to judge
        let mut old = parsed.clone();
        old.mac = None;
        assert!(!old.verify(&old.to_bytes(), &crypto).unwrap());
    }

    #[test]
    fn fields_this_version_does_not_know_are_authenticated_too() {
        let (c, crypto) = keyfile_sample();
        let mut v = serde_json::to_value(&c).unwrap();
        // a newer proxborg's addition, with its MAC: parses (ignored) and verifies
        v["future"] = serde_json::json!({"b": 1, "a": [2, 3]});
        let mac = crypto.config_mac(&mac_input(v.clone())).unwrap();
        v["mac"] = mac.to_hex().to_string().into();
        let raw = serde_json::to_vec_pretty(&v).unwrap();
        assert!(RepoConfig::parse(&raw)
            .unwrap()
            .verify(&raw, &crypto)
            .unwrap());
        // the same field slipped in by someone without the key does not
        v["future"]["b"] = 2.into();
        let raw = serde_json::to_vec(&v).unwrap();
        assert!(RepoConfig::parse(&raw)
            .unwrap()
            .verify(&raw, &crypto)
            .is_err());
    }

    #[test]
    fn an_unencrypted_config_carries_no_mac() {
        let (mut c, _) = keyfile_sample();
        c.encryption = EncryptionMode::None;
        assert!(RepoConfig::parse(&c.to_bytes()).is_err());
    }

    #[test]
    fn ids_that_are_not_hex_are_refused_when_parsed() {
        for id in ["../../etc/x", "/root/x"] {
            let text = String::from_utf8(sample().to_bytes())
                .unwrap()
                .replace(&"ab".repeat(16), id);
            let err = RepoConfig::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("invalid repository id"), "{err}");
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        assert_eq!(RepoConfig::parse(&c.to_bytes()).unwrap(), c);
    }

    #[test]
    fn newer_format_is_refused_clearly() {
        let mut c = sample();
        c.format = FORMAT_VERSION + 1;
        assert!(matches!(
            RepoConfig::parse(&c.to_bytes()),
            Err(RepoError::UnsupportedVersion { .. })
        ));
        assert!(RepoConfig::parse(b"garbage").unwrap_err().is_corruption());
    }

    #[test]
    fn odd_chunker_params_are_corruption() {
        let mut c = sample();
        c.chunker.avg += 1;
        assert!(RepoConfig::parse(&c.to_bytes()).is_err());
    }
}
