//! The `zfs send` stream of a **zvol**, decoded as it arrives from the pipe: the subset of
//! OpenZFS's replication format that a plain `zfs send pool/vol@snap` or
//! `zfs send -i pool/vol#bm pool/vol@snap` emits (docs/ZVOL.md, "zvol incrementals: send
//! records used"; /work/shared/ZFS-SEND-FACTS.md). Pure: it reads any `Read` and never runs
//! `zfs`; it must never buffer the stream, and never trust a length before checking it.
//!
//! Layout: 312-byte records (`dmu_replay_record_t`), each followed by a payload whose length
//! comes from the record's own fields; BEGIN first, END last, nothing after END. Integers are
//! little-endian (the sender's native order; a big-endian sender's stream is refused). One
//! Fletcher-4 state runs over the whole stream: every record but BEGIN carries the state
//! after its first 280 bytes in bytes 280..312, and END carries the state before itself.
//!
//! What comes out ([`Event`]): the BEGIN facts, the data object's (object 1) OBJECT record,
//! WRITEs and FREEs of object 1, and END once every checksum matched and EOF followed.
//! Records of other objects (the volsize ZAP, object 2) are checked and skipped. Anything a
//! plain send does not make (compressed, embedded, raw, dedup, spill, redacted, resumed,
//! compound streams) is refused with the `zfs send` flag to drop.
//!
//! Limits, checked before allocating: a payload is at most [`MAX_PAYLOAD`] (16 MiB, the
//! largest ZFS block) and a multiple of 8; offsets plus lengths must not overflow u64. The
//! reader holds one record header and one payload buffer, reused.

mod changes;
mod reader;
#[doc(hidden)]
pub mod test_support;
#[cfg(test)]
mod tests;

pub use changes::{touched_chunks, ChangeSet, WritePastEnd, CHUNK_SIZE};
pub use reader::SendStreamReader;

/// Size of every record header (`dmu_replay_record_t`).
pub const RECORD_LEN: usize = 312;
/// Bytes of a header the running checksum covers before its own checksum field.
pub const CHECKSUMMED_LEN: usize = 280;
/// `DMU_BACKUP_MAGIC`, in BEGIN's `drr_magic`.
pub const MAGIC: u64 = 0x2_F5BA_CBAC;
/// The largest payload accepted: `SPA_MAXBLOCKSIZE` (16 MiB).
pub const MAX_PAYLOAD: u64 = 16 << 20;
/// `ZVOL_OBJ`: the object holding the volume's bytes.
pub const ZVOL_OBJ: u64 = 1;
/// `DMU_OT_ZVOL`: the type of object 1.
pub const DMU_OT_ZVOL: u32 = 23;
/// `DMU_OST_ZVOL`: BEGIN's objset type for a volume.
pub const DMU_OST_ZVOL: u32 = 3;
/// `DMU_SUBSTREAM`: the header type of a single-snapshot stream.
pub const DMU_SUBSTREAM: u64 = 1;
/// `DMU_BACKUP_FEATURE_LARGE_BLOCKS`: the only feature accepted (`-L` with blocks >128K).
pub const FEATURE_LARGE_BLOCKS: u64 = 1 << 19;
/// `DMU_OBJECT_END`: a FREE length meaning "to the end of the object".
pub const OBJECT_END: u64 = u64::MAX;

/// BEGIN's `drr_flags` bits a plain zvol send may carry: CLONE, FREERECORDS, SPILL_BLOCK.
pub const BEGIN_FLAGS_ALLOWED: u32 = 1 | 4 | 8;

/// Record types (`drr_type`).
pub mod drr {
    pub const BEGIN: u32 = 0;
    pub const OBJECT: u32 = 1;
    pub const FREEOBJECTS: u32 = 2;
    pub const WRITE: u32 = 3;
    pub const FREE: u32 = 4;
    pub const END: u32 = 5;
    pub const WRITE_BYREF: u32 = 6;
    pub const SPILL: u32 = 7;
    pub const WRITE_EMBEDDED: u32 = 8;
    pub const OBJECT_RANGE: u32 = 9;
    pub const REDACT: u32 = 10;
    /// `DRR_NUMTYPES`: anything at or above is invalid.
    pub const NUMTYPES: u32 = 11;
}

/// The BEGIN record of a single-snapshot zvol stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// Guid of the snapshot sent (`zfs get guid pool/vol@snap`).
    pub to_guid: u64,
    /// Guid of the from-snapshot or bookmark's snapshot; 0 for a full send.
    pub from_guid: u64,
    /// `drr_flags` (a subset of [`BEGIN_FLAGS_ALLOWED`]).
    pub flags: u32,
    /// Feature flags (`drr_versioninfo >> 2`): 0 or [`FEATURE_LARGE_BLOCKS`].
    pub features: u64,
    /// Creation time of the snapshot, seconds since the epoch.
    pub creation_time: u64,
    /// `pool/vol@snap`.
    pub to_name: String,
}

impl Begin {
    pub fn is_incremental(&self) -> bool {
        self.from_guid != 0
    }
}

/// What the reader yields, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Always first.
    Begin(Begin),
    /// OBJECT record of object 1: its block size (volblocksize, capped at 128K without `-L`).
    DataObject { block_size: u32 },
    /// A whole logical block of object 1 as it is in the new snapshot.
    Write { offset: u64, data: &'a [u8] },
    /// Object 1 reads as zeros over `[offset, end)`; `end` `None` means to the end of the
    /// object (past volsize: clamp). In an incremental stream this is not proof of change:
    /// old holes are re-sent under any rewritten indirect block.
    Free { offset: u64, end: Option<u64> },
    /// Last: the checksums matched, END's guid is BEGIN's and nothing followed.
    End { to_guid: u64 },
}

/// A malformed or unsupported stream: what and at which byte (the start of the record, or the
/// position of a read that failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("zfs send stream, byte {offset}: {kind}")]
pub struct SendStreamError {
    pub offset: u64,
    pub kind: StreamErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamErrorKind {
    #[error("reading: {0}")]
    Io(String),
    #[error("truncated inside {0}")]
    Truncated(&'static str),
    #[error("no END record: the stream was cut short")]
    MissingEnd,
    #[error("bytes after the END record (a compound -R/-I stream?)")]
    TrailingData,
    #[error("first record is type {0}, not BEGIN")]
    NotBegin(u32),
    #[error("bad magic {0:#x} (not a zfs send stream)")]
    BadMagic(u64),
    #[error("byte-swapped stream (sent by a big-endian host): not supported")]
    ByteSwapped,
    #[error("header type {0}, not a single-snapshot stream: send without -R/-I/-p/-h/-b")]
    Compound(u64),
    #[error("unsupported feature flags {bits:#x}: {}", describe_features(*bits))]
    Features { bits: u64 },
    #[error("unknown BEGIN flags {0:#x}")]
    BeginFlags(u32),
    #[error("objset type {0}, not a zvol (3)")]
    NotZvol(u32),
    #[error("BEGIN carries a {0}-byte nvlist (resume/redact/raw stream): not supported")]
    BeginPayload(u32),
    #[error("BEGIN snapshot name is not a NUL-terminated UTF-8 'pool/vol@snap'")]
    BadName,
    #[error("a second BEGIN inside the stream")]
    SecondBegin,
    #[error("unknown record type {0}")]
    UnknownType(u32),
    #[error("{record} record refused: {why}")]
    Refused {
        record: &'static str,
        why: &'static str,
    },
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    Oversize {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("{what} of {len} bytes is not a multiple of 8")]
    Unaligned { what: &'static str, len: u64 },
    #[error("{what}: offset {offset} + length {length} overflows")]
    Overflow {
        what: &'static str,
        offset: u64,
        length: u64,
    },
    #[error("object 1 has type {0}, not a zvol data object (23)")]
    DataObjectType(u32),
    #[error("object 1 block size {0} is not a multiple of 512 in 512..=16M")]
    BlockSize(u32),
    #[error("FREEOBJECTS {first}+{count} frees the zvol's data object")]
    FreesDataObject { first: u64, count: u64 },
    #[error("record checksum mismatch (corrupted stream)")]
    RecordChecksum,
    #[error("END checksum mismatch (corrupted stream)")]
    EndChecksum,
    #[error("END guid {end:#x} is not BEGIN's {begin:#x}")]
    EndGuid { begin: u64, end: u64 },
    #[error("the stream already failed")]
    Failed,
}

/// Names the feature bits of a BEGIN with the `zfs send` option that sets them.
pub fn describe_features(bits: u64) -> String {
    const NAMES: &[(u64, &str)] = &[
        (1 << 0, "DEDUP (drop -D; try zstream redup)"),
        (1 << 1, "DEDUPPROPS (drop -D)"),
        (1 << 2, "SA_SPILL (filesystem only)"),
        (1 << 16, "EMBED_DATA (drop -e)"),
        (1 << 17, "LZ4 (drop -c/-e/-w)"),
        (1 << 19, "LARGE_BLOCKS"),
        (1 << 20, "RESUMING (drop -t; re-send from the bookmark)"),
        (1 << 21, "REDACTED (drop --redact)"),
        (1 << 22, "COMPRESSED (drop -c)"),
        (1 << 23, "LARGE_DNODE (filesystem only)"),
        (1 << 24, "RAW (drop -w)"),
        (1 << 25, "ZSTD (drop -c/-w)"),
        (1 << 26, "HOLDS (drop -h)"),
        (1 << 27, "SWITCH_TO_LARGE_BLOCKS"),
        (1 << 28, "LONGNAME (filesystem only)"),
        (1 << 29, "LARGE_MICROZAP (filesystem only)"),
    ];
    let mut parts: Vec<String> = NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0 && *b != FEATURE_LARGE_BLOCKS)
        .map(|(_, n)| n.to_string())
        .collect();
    let known = NAMES.iter().fold(0, |acc, (b, _)| acc | b);
    if bits & !known != 0 {
        parts.push(format!("unknown bits {:#x}", bits & !known));
    }
    parts.join(", ")
}

/// Fletcher-4 over little-endian u32 words, as `fletcher_4_scalar_native` on a little-endian
/// host; fed in pieces it equals one pass over the concatenation (pieces are multiples of 4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fletcher4([u64; 4]);

impl Fletcher4 {
    pub fn update(&mut self, bytes: &[u8]) {
        let [mut a, mut b, mut c, mut d] = self.0;
        for w in bytes.chunks_exact(4) {
            a = a.wrapping_add(u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
            b = b.wrapping_add(a);
            c = c.wrapping_add(b);
            d = d.wrapping_add(c);
        }
        self.0 = [a, b, c, d];
    }

    /// The state as the 32 bytes a record stores (`zio_cksum_t`, four LE u64).
    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(8).zip(self.0) {
            o.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}
