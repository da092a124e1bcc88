//! Item stream encoding. Byte layout (also in docs/FORMAT.md):
//!
//! ```text
//! stream  = magic "PXIS" | version u8 (= 1) | record*
//! record  = len (unsigned LEB128 varint) | postcard(Item) of exactly len bytes
//! ```
//! The stream ends where the bytes end; the archive file records how many items it holds, so a
//! truncated stream is detected (`ItemStreamReader::expect_items`). Decoders reject other
//! magics and versions.
//!
//! Decoding limits: a record's length is checked against `MAX_RECORD` before its bytes are
//! awaited or sliced; inside a record postcard preallocates at most 1 MiB per sequence and
//! borrows nothing it has not bounds-checked. A decoded item is still untrusted: consumers
//! check its sparse map (`item::checked_extents`) and paths before use.

use super::Item;
use thiserror::Error;

pub const MAGIC: &[u8; 4] = b"PXIS";
pub const VERSION: u8 = 1;
/// No single record may be larger than this (a 4 KiB path, 64 KiB xattrs and a 16 GiB file's
/// chunk list stay well below it); a larger length is corruption, not a reason to allocate.
pub const MAX_RECORD: usize = 64 << 20;

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("item stream: bad magic (not an item stream)")]
    BadMagic,
    #[error("item stream: unsupported version {0} (this proxborg reads version {VERSION})")]
    Version(u8),
    #[error("item stream: truncated record")]
    Truncated,
    #[error("item stream: record of {0} bytes is larger than the {MAX_RECORD}-byte limit")]
    TooLarge(usize),
    #[error("item stream: undecodable record: {0}")]
    Decode(#[from] postcard::Error),
}

pub fn header() -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.push(VERSION);
    v
}

pub fn check_header(bytes: &[u8]) -> Result<(), CodecError> {
    let Some((magic, [version, ..])) = bytes.split_first_chunk::<4>() else {
        return Err(CodecError::Truncated);
    };
    if magic != MAGIC {
        return Err(CodecError::BadMagic);
    }
    if *version != VERSION {
        return Err(CodecError::Version(*version));
    }
    Ok(())
}

/// Appends one length-prefixed record to `out`.
pub fn encode_record(item: &Item, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let body = postcard::to_allocvec(item)?;
    crate::varint::encode(body.len() as u64, out);
    out.extend_from_slice(&body);
    Ok(())
}

/// Decodes one record from the front of `buf`. `Ok(None)` means `buf` holds only part of a
/// record (the caller must supply more bytes); otherwise returns the item and bytes consumed.
pub fn decode_record(buf: &[u8]) -> Result<Option<(Item, usize)>, CodecError> {
    let varint = crate::varint::decode(buf).map_err(|_| CodecError::TooLarge(usize::MAX))?;
    let Some((len, hdr)) = varint else {
        return Ok(None);
    };
    let len = usize::try_from(len).map_err(|_| CodecError::TooLarge(usize::MAX))?;
    if len > MAX_RECORD {
        return Err(CodecError::TooLarge(len));
    }
    let Some(end) = hdr.checked_add(len) else {
        return Err(CodecError::TooLarge(len));
    };
    let Some(record) = buf.get(hdr..end) else {
        return Ok(None);
    };
    let item = postcard::from_bytes(record)?;
    Ok(Some((item, end)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::id::ChunkId;
    use crate::item::*;
    use proptest::prelude::*;

    pub fn arb_item() -> impl Strategy<Value = Item> {
        let kind = prop_oneof![
            Just(Kind::File),
            Just(Kind::Dir),
            Just(Kind::Fifo),
            proptest::collection::vec(any::<u8>(), 1..300)
                .prop_map(|t| Kind::Symlink { target: t }),
            proptest::collection::vec(any::<u8>(), 1..300)
                .prop_map(|t| Kind::Hardlink { target: t }),
            (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Kind::CharDevice { major: a, minor: b }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(a, b)| Kind::BlockDevice { major: a, minor: b }),
        ];
        let ts =
            (any::<i64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Timestamp { secs: s, nanos: n });
        let acl = proptest::collection::vec(
            (0u8..6, any::<u32>(), 0u8..8).prop_map(|(t, id, perm)| AclEntry {
                tag: match t {
                    0 => AclTag::UserObj,
                    1 => AclTag::User(id),
                    2 => AclTag::GroupObj,
                    3 => AclTag::Group(id),
                    4 => AclTag::Mask,
                    _ => AclTag::Other,
                },
                perm,
            }),
            0..6,
        );
        (
            proptest::collection::vec(any::<u8>(), 0..600),
            kind,
            (0u32..0o10000, any::<u32>(), any::<u32>()),
            (ts.clone(), ts.clone(), ts),
            any::<u64>(),
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 1..40),
                    proptest::collection::vec(any::<u8>(), 0..100),
                )
                    .prop_map(|(name, value)| Xattr { name, value }),
                0..4,
            ),
            (proptest::option::of(acl.clone()), proptest::option::of(acl)),
            proptest::option::of(proptest::collection::vec(
                (any::<u64>(), any::<u64>()).prop_map(|(offset, len)| Extent { offset, len }),
                0..5,
            )),
            proptest::collection::vec(
                (any::<[u8; 32]>(), any::<u32>()).prop_map(|(id, len)| ChunkRef {
                    id: ChunkId(id),
                    len,
                }),
                0..5,
            ),
        )
            .prop_map(
                |(
                    path,
                    kind,
                    (mode, uid, gid),
                    (mtime, atime, ctime),
                    size,
                    xattrs,
                    (aa, ad),
                    sparse,
                    chunks,
                )| Item {
                    path,
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime,
                    atime,
                    ctime,
                    size,
                    xattrs,
                    acl_access: aa,
                    acl_default: ad,
                    sparse,
                    chunks,
                },
            )
    }

    proptest! {
        #[test]
        fn records_round_trip(items in proptest::collection::vec(arb_item(), 0..8)) {
            let mut buf = header();
            for it in &items {
                encode_record(it, &mut buf).unwrap();
            }
            check_header(&buf).unwrap();
            let mut pos = 5;
            let mut out = Vec::new();
            while pos < buf.len() {
                let (it, used) = decode_record(&buf[pos..]).unwrap().unwrap();
                out.push(it);
                pos += used;
            }
            prop_assert_eq!(out, items);
        }

        #[test]
        fn partial_records_ask_for_more(item in arb_item(), cut in 0usize..100) {
            let mut buf = Vec::new();
            encode_record(&item, &mut buf).unwrap();
            let cut = cut.min(buf.len() - 1);
            prop_assert!(decode_record(&buf[..cut]).unwrap().is_none());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_record(&bytes);
        }
    }

    #[test]
    fn rejects_foreign_header() {
        assert!(matches!(
            check_header(b"PXIS\x02"),
            Err(CodecError::Version(2))
        ));
        assert!(matches!(
            check_header(b"XXXX\x01"),
            Err(CodecError::BadMagic)
        ));
    }
}
