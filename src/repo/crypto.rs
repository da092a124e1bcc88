//! How blobs and repository objects are stored: ids, compression, encryption, verification.
//! Pure byte transformations; no I/O.
//!
//! Blob (stored form, inside a pack):
//! - unencrypted: `tag u8 ‖ payload`, id = BLAKE3(plaintext)
//! - encrypted:   `nonce[24] ‖ XChaCha20-Poly1305(tag ‖ payload, aad = id)`, id = keyed BLAKE3
//!
//! where `tag` 0 = payload is the plaintext, 1 = payload is a zstd frame of it.
//! Every decode re-hashes the plaintext and compares it with the id, so a read either returns
//! the exact bytes that were stored or fails.
//!
//! Sealed object (pack headers, index files, archive files):
//! `magic[4] ‖ version u8 ‖ mode u8 ‖ rest`, mode 0: `rest = body ‖ BLAKE3(magic‖version‖mode‖body)`,
//! mode 1: `rest = nonce[24] ‖ XChaCha20-Poly1305(body, aad = magic‖version‖mode)`.
//!
//! Decoding limits: a blob claiming more than `MAX_BLOB` plain bytes is refused before anything
//! is allocated; decompression allocates the claimed length (at most `MAX_BLOB`) and no more.
//! Readers check an index entry against `MAX_STORED_BLOB` before fetching it. Unsealing copies
//! at most the object it was given; sizes are split with checked slicing, never indexing.

use super::compression::Compression;
use super::error::{RepoError, Result};
use super::id::ChunkId;
use super::key::{random_bytes, Keys};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};

/// Largest plaintext blob a reader accepts (chunks are at most 4 MiB; metadata blobs smaller).
pub const MAX_BLOB: usize = 64 << 20;
/// Largest stored form of a blob: a blob is stored compressed only when that is smaller, so
/// at most the plaintext, its tag byte, and the nonce and tag of the cipher.
pub const MAX_STORED_BLOB: usize = MAX_BLOB + 1 + 24 + 16;
const TAG_RAW: u8 = 0;
const TAG_ZSTD: u8 = 1;

#[derive(Clone)]
pub struct Crypto {
    keys: Option<Keys>,
}

impl Crypto {
    pub fn plain() -> Self {
        Crypto { keys: None }
    }

    pub fn encrypted(keys: Keys) -> Self {
        Crypto { keys: Some(keys) }
    }

    pub fn is_encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// Authentication code of the config's protected fields; `None` when unencrypted.
    pub fn config_mac(&self, input: &[u8]) -> Option<blake3::Hash> {
        self.keys
            .as_ref()
            .map(|k| blake3::keyed_hash(&k.config_mac, input))
    }

    /// The master key's fingerprint (hex; see `Keys::fingerprint`); `None` when unencrypted.
    pub fn key_fingerprint(&self) -> Option<String> {
        self.keys.as_ref().map(|k| super::id::hex(&k.fingerprint))
    }

    /// The id key and CDC seed (to share them with a new repository); `None` when unencrypted.
    pub fn id_keys(&self) -> Option<super::key::IdKeys> {
        self.keys.as_ref().map(Keys::id_keys)
    }

    pub fn cdc_seed(&self) -> u64 {
        self.keys.as_ref().map_or(0, |k| k.cdc_seed)
    }

    pub fn blob_id(&self, plaintext: &[u8]) -> ChunkId {
        match &self.keys {
            Some(k) => ChunkId::keyed(&k.id, plaintext),
            None => ChunkId::of(plaintext),
        }
    }

    fn cipher(&self) -> Option<XChaCha20Poly1305> {
        self.keys
            .as_ref()
            .map(|k| XChaCha20Poly1305::new((&k.enc).into()))
    }

    /// Compresses (per `compression`) and encrypts one blob whose id is already known.
    pub fn encode_blob(
        &self,
        id: &ChunkId,
        plaintext: &[u8],
        compression: Compression,
        enc: &mut Encoder,
    ) -> Result<Vec<u8>> {
        let mut framed = Vec::with_capacity(plaintext.len() / 2 + 64);
        match compression {
            Compression::None => {
                framed.push(TAG_RAW);
                framed.extend_from_slice(plaintext);
            }
            Compression::Zstd { level, auto } => {
                let z = enc.compress(plaintext, level)?;
                // zstd gives back more than it took on incompressible data; `auto` also keeps
                // blobs raw that shrink by less than 3%.
                let keep_raw =
                    z.len() >= plaintext.len() || (auto && z.len() * 100 > plaintext.len() * 97);
                if keep_raw {
                    framed.push(TAG_RAW);
                    framed.extend_from_slice(plaintext);
                } else {
                    framed.push(TAG_ZSTD);
                    framed.extend_from_slice(&z);
                }
            }
        }
        match self.cipher() {
            None => Ok(framed),
            Some(c) => {
                let nonce: [u8; 24] = random_bytes()?;
                let ct = c
                    .encrypt(
                        &XNonce::from(nonce),
                        Payload {
                            msg: &framed,
                            aad: &id.0,
                        },
                    )
                    .map_err(|_| RepoError::Invalid("encryption failed".into()))?;
                let mut out = Vec::with_capacity(24 + ct.len());
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&ct);
                Ok(out)
            }
        }
    }

    /// Decrypts, decompresses and verifies a stored blob against its id.
    pub fn decode_blob(&self, id: &ChunkId, stored: &[u8], raw_len: usize) -> Result<Vec<u8>> {
        let what = || format!("blob {id}");
        if raw_len > MAX_BLOB {
            return Err(RepoError::corrupt(
                what(),
                format!("claims {raw_len} bytes"),
            ));
        }
        let framed;
        let framed_ref: &[u8] = match self.cipher() {
            None => stored,
            Some(c) => {
                let (nonce, msg) = stored
                    .split_first_chunk::<24>()
                    .filter(|(_, msg)| msg.len() >= 16)
                    .ok_or_else(|| RepoError::corrupt(what(), "too short to be encrypted"))?;
                framed = c
                    .decrypt(&XNonce::from(*nonce), Payload { msg, aad: &id.0 })
                    .map_err(|_| {
                        RepoError::corrupt(what(), "authentication failed (tampered or damaged)")
                    })?;
                &framed
            }
        };
        let (&tag, payload) = framed_ref
            .split_first()
            .ok_or_else(|| RepoError::corrupt(what(), "empty"))?;
        let plain = match tag {
            TAG_RAW => payload.to_vec(),
            TAG_ZSTD => decompress(payload, raw_len)
                .map_err(|e| RepoError::corrupt(what(), format!("zstd: {e}")))?,
            t => {
                return Err(RepoError::corrupt(
                    what(),
                    format!("unknown storage tag {t}"),
                ))
            }
        };
        if plain.len() != raw_len {
            return Err(RepoError::corrupt(
                what(),
                format!("{} bytes instead of {raw_len}", plain.len()),
            ));
        }
        if self.blob_id(&plain) != *id {
            return Err(RepoError::corrupt(what(), "content does not match its id"));
        }
        Ok(plain)
    }

    pub fn seal(&self, magic: &[u8; 4], version: u8, body: &[u8]) -> Result<Vec<u8>> {
        let mut out = magic.to_vec();
        out.push(version);
        match self.cipher() {
            None => {
                out.push(0);
                out.extend_from_slice(body);
                let sum = blake3::hash(&out);
                out.extend_from_slice(sum.as_bytes());
            }
            Some(c) => {
                out.push(1);
                let aad = out.clone();
                let nonce: [u8; 24] = random_bytes()?;
                let ct = c
                    .encrypt(
                        &XNonce::from(nonce),
                        Payload {
                            msg: body,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| RepoError::Invalid("encryption failed".into()))?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&ct);
            }
        }
        Ok(out)
    }

    /// Opens a sealed object that must carry exactly `version` (readers refuse versions they
    /// do not know rather than guess); returns its body.
    pub fn unseal_version(
        &self,
        magic: &[u8; 4],
        version: u8,
        stored: &[u8],
        what: &str,
    ) -> Result<Vec<u8>> {
        let (found, body) = self.unseal(magic, stored, what)?;
        if found != version {
            return Err(RepoError::corrupt(
                what,
                format!("unsupported version {found} (this proxborg reads {version})"),
            ));
        }
        Ok(body)
    }

    /// Verifies and opens a sealed object; returns its version and body.
    pub fn unseal(&self, magic: &[u8; 4], stored: &[u8], what: &str) -> Result<(u8, Vec<u8>)> {
        let Some((head, rest)) = stored.split_first_chunk::<6>() else {
            return Err(RepoError::corrupt(what, "bad magic"));
        };
        if &head[..4] != magic {
            return Err(RepoError::corrupt(what, "bad magic"));
        }
        let (version, mode) = (head[4], head[5]);
        let truncated = || RepoError::corrupt(what, "truncated");
        match (mode, self.cipher()) {
            (0, None) => {
                let (body, sum) = rest.split_last_chunk::<32>().ok_or_else(truncated)?;
                let content = stored.get(..stored.len() - 32).ok_or_else(truncated)?;
                if blake3::hash(content).as_bytes() != sum {
                    return Err(RepoError::corrupt(what, "checksum mismatch"));
                }
                Ok((version, body.to_vec()))
            }
            (1, Some(c)) => {
                let (nonce, msg) = rest
                    .split_first_chunk::<24>()
                    .filter(|(_, msg)| msg.len() >= 16)
                    .ok_or_else(truncated)?;
                let body = c
                    .decrypt(
                        &XNonce::from(*nonce),
                        Payload {
                            msg,
                            aad: head.as_slice(),
                        },
                    )
                    .map_err(|_| {
                        RepoError::corrupt(what, "authentication failed (tampered or damaged)")
                    })?;
                Ok((version, body))
            }
            (1, None) => Err(RepoError::corrupt(
                what,
                "encrypted, but the repository config says unencrypted",
            )),
            (0, Some(_)) => Err(RepoError::corrupt(
                what,
                "unencrypted object in an encrypted repository",
            )),
            (m, _) => Err(RepoError::corrupt(what, format!("unknown mode {m}"))),
        }
    }
}

thread_local! {
    /// One zstd decompression context per thread, reused: creating one per blob (~100 KiB,
    /// zeroed) was 6% of an export-tar.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses a zstd frame of at most `raw_len` bytes.
fn decompress(frame: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(frame, raw_len.max(1))
    })
}

/// Per-thread compression state (a zstd context is expensive to create).
#[derive(Default)]
pub struct Encoder {
    zstd: Option<(i32, zstd::bulk::Compressor<'static>)>,
}

impl Encoder {
    fn compress(&mut self, data: &[u8], level: i32) -> Result<Vec<u8>> {
        if self.zstd.as_ref().map(|(l, _)| *l) != Some(level) {
            let c = zstd::bulk::Compressor::new(level)
                .map_err(|e| RepoError::Invalid(format!("zstd: {e}")))?;
            self.zstd = Some((level, c));
        }
        let (_, c) = self.zstd.as_mut().expect("set above");
        c.compress(data)
            .map_err(|e| RepoError::Invalid(format!("zstd: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn both() -> Vec<Crypto> {
        vec![Crypto::plain(), Crypto::encrypted(Keys::derive(&[9u8; 32]))]
    }

    proptest! {
        #[test]
        fn blobs_round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), rep in 0usize..3) {
            let data: Vec<u8> = data.repeat(rep + 1);
            for c in both() {
                for comp in [Compression::None, Compression::default(), Compression::Zstd { level: 1, auto: true }] {
                    let id = c.blob_id(&data);
                    let stored = c.encode_blob(&id, &data, comp, &mut Encoder::default()).unwrap();
                    prop_assert_eq!(c.decode_blob(&id, &stored, data.len()).unwrap(), data.clone());
                }
            }
        }

        #[test]
        fn any_flipped_byte_is_detected(data in proptest::collection::vec(any::<u8>(), 1..2000), pos in any::<usize>(), bit in 0u8..8) {
            for c in both() {
                let id = c.blob_id(&data);
                let mut stored = c.encode_blob(&id, &data, Compression::default(), &mut Encoder::default()).unwrap();
                let p = pos % stored.len();
                stored[p] ^= 1 << bit;
                prop_assert!(c.decode_blob(&id, &stored, data.len()).is_err());
            }
        }

        #[test]
        fn sealed_round_trip_and_tamper(body in proptest::collection::vec(any::<u8>(), 0..500), pos in any::<usize>()) {
            for c in both() {
                let s = c.seal(b"TEST", 3, &body).unwrap();
                prop_assert_eq!(c.unseal(b"TEST", &s, "t").unwrap(), (3, body.clone()));
                let mut bad = s.clone();
                let p = pos % bad.len();
                bad[p] ^= 0x40;
                prop_assert!(c.unseal(b"TEST", &bad, "t").is_err());
            }
        }
    }

    #[test]
    fn encrypted_blobs_hide_plaintext() {
        let c = Crypto::encrypted(Keys::derive(&[3u8; 32]));
        let data = b"MARKER-MARKER-MARKER".repeat(100);
        let id = c.blob_id(&data);
        let stored = c
            .encode_blob(&id, &data, Compression::None, &mut Encoder::default())
            .unwrap();
        assert!(!stored.windows(6).any(|w| w == b"MARKER"));
        assert_ne!(id, ChunkId::of(&data), "encrypted ids must be keyed");
    }
}
