//! The repository config: the one plaintext, mutable object (`config`, JSON). It says how to
//! read everything else: format version, chunker parameters, default compression, encryption
//! mode and (repokey) the wrapped master key.

use super::compression::Compression;
use super::error::{RepoError, Result};
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
    /// Random, hex; names the client cache directory and the key file.
    pub id: String,
    pub chunker: ChunkerParams,
    pub compression: Compression,
    pub encryption: EncryptionMode,
    /// Only in `repokey` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<WrappedKey>,
    #[serde(default)]
    pub append_only: bool,
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
        Ok(c)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("config serializes");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RepoConfig {
        RepoConfig {
            format: FORMAT_VERSION,
            id: "ab".repeat(16),
            chunker: ChunkerParams::CONTENT,
            compression: Compression::default(),
            encryption: EncryptionMode::None,
            key: None,
            append_only: false,
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
