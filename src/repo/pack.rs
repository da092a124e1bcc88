//! Pack files: many stored blobs followed by a sealed header that lists them.
//!
//! ```text
//! pack   = blob* ‖ sealed("PXPH", v1, postcard(Vec<PackEntry>)) ‖ header_len u32 LE
//! ```
//! A pack is named by the BLAKE3 hash of all its bytes (`data/<first 2 hex>/<hex>`), so a full
//! read verifies it. Content blobs and metadata blobs go to different packs. Pure format code.
//!
//! Decoding limits (checked before anything is allocated or sliced): a header of at most
//! `MAX_HEADER` bytes, every entry inside the blob area, at most `MAX_STORED_BLOB` bytes stored
//! and `MAX_BLOB` plain; offsets are added in `u64`.

use super::crypto::{Crypto, MAX_BLOB, MAX_STORED_BLOB};
use super::error::{RepoError, Result};
use super::id::ChunkId;
use serde::{Deserialize, Serialize};

pub const HEADER_MAGIC: &[u8; 4] = b"PXPH";
pub const HEADER_VERSION: u8 = 1;
/// A pack is closed once it holds this many bytes.
pub const TARGET_SIZE: usize = 16 << 20;
/// Largest sealed header a reader accepts (a full 16 MiB pack of tiny blobs needs a few MiB).
pub const MAX_HEADER: usize = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    Data,
    Meta,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    pub id: ChunkId,
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
}

pub fn pack_key(id: &ChunkId) -> String {
    let hex = id.to_hex();
    format!("data/{}/{}", &hex[..2], hex)
}

pub fn pack_id_from_key(key: &str) -> Option<ChunkId> {
    ChunkId::from_hex(key.rsplit('/').next()?)
}

/// Accumulates blobs for one pack in memory (packs are small enough).
#[derive(Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn add(&mut self, id: ChunkId, kind: BlobKind, stored: &[u8], raw_len: u32) {
        self.entries.push(PackEntry {
            id,
            kind,
            offset: self.buf.len() as u32,
            length: stored.len() as u32,
            raw_len,
        });
        self.buf.extend_from_slice(stored);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Finishes the pack: returns its id, bytes and entries.
    pub fn finish(mut self, crypto: &Crypto) -> Result<(ChunkId, Vec<u8>, Vec<PackEntry>)> {
        let body =
            postcard::to_allocvec(&self.entries).map_err(|e| RepoError::Invalid(e.to_string()))?;
        let header = crypto.seal(HEADER_MAGIC, HEADER_VERSION, &body)?;
        self.buf.extend_from_slice(&header);
        self.buf
            .extend_from_slice(&(header.len() as u32).to_le_bytes());
        let id = ChunkId::of(&self.buf);
        Ok((id, self.buf, self.entries))
    }
}

/// Where the header sits, from the last 4 bytes of a pack of `pack_len` bytes.
pub fn header_range(pack_len: u64, trailer: &[u8]) -> Result<(u64, usize)> {
    let len = u32::from_le_bytes(
        trailer
            .try_into()
            .map_err(|_| RepoError::corrupt("pack", "no trailer"))?,
    );
    let len = usize::try_from(len).map_err(|_| RepoError::corrupt("pack", "header too large"))?;
    if len > MAX_HEADER {
        return Err(RepoError::corrupt(
            "pack",
            format!("header length {len} is over the {MAX_HEADER}-byte limit"),
        ));
    }
    let offset = pack_len
        .checked_sub(4)
        .and_then(|n| n.checked_sub(len as u64))
        .ok_or_else(|| {
            RepoError::corrupt(
                "pack",
                format!("header length {len} exceeds the pack size {pack_len}"),
            )
        })?;
    Ok((offset, len))
}

/// Decodes a pack header and checks that every entry lies inside the blob area and claims
/// no more than a reader accepts.
pub fn decode_header(
    crypto: &Crypto,
    sealed: &[u8],
    header_offset: u64,
    what: &str,
) -> Result<Vec<PackEntry>> {
    let body = crypto.unseal_version(HEADER_MAGIC, HEADER_VERSION, sealed, what)?;
    decode_header_body(&body, header_offset, what)
}

/// The unsealed part of [`decode_header`]: postcard entries, each checked.
pub fn decode_header_body(body: &[u8], header_offset: u64, what: &str) -> Result<Vec<PackEntry>> {
    let entries: Vec<PackEntry> =
        postcard::from_bytes(body).map_err(|e| RepoError::corrupt(what, format!("header: {e}")))?;
    for e in &entries {
        check_entry(e, what)?;
        if u64::from(e.offset) + u64::from(e.length) > header_offset {
            return Err(RepoError::corrupt(
                what,
                format!("blob {} lies outside the pack", e.id),
            ));
        }
    }
    Ok(entries)
}

/// Refuses an entry (from a pack header or an index file) whose lengths no writer produces,
/// before anything is allocated for it.
pub fn check_entry(e: &PackEntry, what: &str) -> Result<()> {
    if e.raw_len as usize > MAX_BLOB || e.length as usize > MAX_STORED_BLOB {
        return Err(RepoError::corrupt(
            what,
            format!(
                "blob {} claims {} bytes stored, {} plain (limits {MAX_STORED_BLOB}, {MAX_BLOB})",
                e.id, e.length, e.raw_len
            ),
        ));
    }
    Ok(())
}

/// Decodes the header of a whole pack held in memory (trailer, header, entry bounds).
pub fn decode_pack(crypto: &Crypto, pack: &[u8], what: &str) -> Result<Vec<PackEntry>> {
    let trailer_at = pack
        .len()
        .checked_sub(4)
        .ok_or_else(|| RepoError::corrupt(what, "too short"))?;
    let (offset, len) = header_range(pack.len() as u64, pack.get(trailer_at..).unwrap_or(&[]))?;
    let sealed = usize::try_from(offset)
        .ok()
        .and_then(|o| pack.get(o..o.checked_add(len)?))
        .ok_or_else(|| RepoError::corrupt(what, "header outside the pack"))?;
    decode_header(crypto, sealed, offset, what)
}

/// The stored bytes of one entry of a pack held in memory.
pub fn blob_bytes<'a>(pack: &'a [u8], e: &PackEntry, what: &str) -> Result<&'a [u8]> {
    let start = e.offset as usize;
    start
        .checked_add(e.length as usize)
        .and_then(|end| pack.get(start..end))
        .ok_or_else(|| RepoError::corrupt(what, format!("blob {} lies outside the pack", e.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::key::Keys;

    #[test]
    fn header_round_trip_and_bounds() {
        for crypto in [Crypto::plain(), Crypto::encrypted(Keys::derive(&[1; 32]))] {
            let mut b = PackBuilder::default();
            b.add(ChunkId([1; 32]), BlobKind::Data, b"abc", 3);
            b.add(ChunkId([2; 32]), BlobKind::Meta, b"defg", 9);
            let (id, bytes, entries) = b.finish(&crypto).unwrap();
            assert_eq!(id, ChunkId::of(&bytes));
            let (off, len) = header_range(bytes.len() as u64, &bytes[bytes.len() - 4..]).unwrap();
            assert_eq!(off, 7);
            let got =
                decode_header(&crypto, &bytes[off as usize..off as usize + len], off, "p").unwrap();
            assert_eq!(got, entries);
            assert_eq!(&bytes[got[1].offset as usize..][..4], b"defg");
            assert!(header_range(3, &[9, 9, 9, 9]).is_err());
        }
    }

    #[test]
    fn lengths_are_checked_before_use() {
        let e = PackEntry {
            id: ChunkId([1; 32]),
            kind: BlobKind::Data,
            offset: u32::MAX - 1,
            length: 10,
            raw_len: 10,
        };
        // `offset + length` overflowed u32 in check's verify pass.
        assert!(blob_bytes(&[0; 64], &e, "p").is_err());
        assert!(header_range(10, &u32::MAX.to_le_bytes()).is_err());
        assert!(header_range(2, &0u32.to_le_bytes()).is_err());
        assert!(decode_pack(&Crypto::plain(), &[1, 2], "p").is_err());
        let huge = PackEntry {
            length: u32::MAX,
            offset: 0,
            ..e
        };
        let body = postcard::to_allocvec(&vec![huge]).unwrap();
        let err = decode_header_body(&body, u64::MAX, "p").unwrap_err();
        assert!(err.to_string().contains("limits"), "{err}");
    }

    #[test]
    fn keys_shard_by_prefix() {
        let id = ChunkId([0xab; 32]);
        assert!(pack_key(&id).starts_with("data/ab/abab"));
        assert_eq!(pack_id_from_key(&pack_key(&id)), Some(id));
    }
}
