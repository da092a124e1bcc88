//! Content identifiers: a blob's id is the BLAKE3 hash of its plaintext (keyed with the
//! repository's id key when the repository is encrypted), packs and index files are named by
//! the BLAKE3 hash of their stored bytes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Bytes as lowercase hex: ids, salts, wrapped keys, fingerprints.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Hex digits (either case) as bytes; `None` for an odd length or any other character.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16);
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect()
}

/// A 32-byte BLAKE3 digest naming a blob, a pack, an index file or an archive file.
/// Serialized as 32 raw bytes in binary formats and as 64 hex digits in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl Serialize for ChunkId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            ChunkId::from_hex(&s)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid id {s:?}")))
        } else {
            <[u8; 32]>::deserialize(d).map(ChunkId)
        }
    }
}

/// Packs, index files and archive files are named the same way as blobs.
pub type ObjectId = ChunkId;

impl ChunkId {
    pub fn of(data: &[u8]) -> Self {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    pub fn keyed(key: &[u8; 32], data: &[u8]) -> Self {
        ChunkId(*blake3::keyed_hash(key, data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 lowercase or uppercase hex digits; anything else is `None`.
    pub fn from_hex(s: &str) -> Option<Self> {
        unhex(s)?.try_into().ok().map(ChunkId)
    }
}

/// A repository's id: 32 lowercase hex digits (16 random bytes), from `config`. It names
/// client-side directories (files cache, security record, key file), so it is validated when
/// the config is parsed: an id like `../../etc/x` or `/root/x` never reaches a path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RepoId(String);

impl RepoId {
    pub const LEN: usize = 32;

    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == Self::LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| RepoId(s.to_string()))
    }

    pub fn from_bytes(b: &[u8; 16]) -> Self {
        RepoId(hex(b))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for RepoId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for RepoId {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

impl<'de> Deserialize<'de> for RepoId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RepoId::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid repository id {s:?} (expected {} lowercase hex digits)",
                RepoId::LEN
            ))
        })
    }
}

impl fmt::Debug for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoId({})", self.0)
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_round_trip(bytes in any::<[u8; 32]>()) {
            let id = ChunkId(bytes);
            prop_assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        }
    }

    #[test]
    fn repository_ids_are_32_lowercase_hex_digits_and_nothing_else() {
        let good = "0123456789abcdef".repeat(2);
        assert_eq!(RepoId::parse(&good).unwrap().as_str(), good);
        assert_eq!(RepoId::from_bytes(&[0xab; 16]).as_str(), "ab".repeat(16));
        for bad in [
            "",
            "../../etc/x",
            "/root/x",
            &"A".repeat(32),
            &"a".repeat(31),
            &"a".repeat(33),
            &format!("{}/", "a".repeat(31)),
            &format!("..{}", "a".repeat(30)),
        ] {
            assert!(RepoId::parse(bad).is_none(), "{bad:?}");
            let json = serde_json::to_string(bad).unwrap();
            assert!(serde_json::from_str::<RepoId>(&json).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_bad_hex() {
        assert_eq!(ChunkId::from_hex("zz"), None);
        assert_eq!(unhex("+f"), None, "a sign is not a digit");
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("0aFf"), Some(vec![10, 255]));
        assert_eq!(ChunkId::from_hex(&"g".repeat(64)), None);
    }
}
