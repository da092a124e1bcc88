//! An encoder of zvol send streams for tests and fuzz seeds: records laid out and checksummed
//! as `dump_record` (dmu_send.c) does. Not used by the program.

use super::{
    drr, Fletcher4, CHECKSUMMED_LEN, DMU_OST_ZVOL, DMU_OT_ZVOL, DMU_SUBSTREAM, MAGIC, RECORD_LEN,
    ZVOL_OBJ,
};

/// A 312-byte record header with little-endian field setters.
#[derive(Clone)]
pub struct Header(pub [u8; RECORD_LEN]);

impl Header {
    pub fn new(ty: u32) -> Self {
        let mut h = Header([0; RECORD_LEN]);
        h.u32(0, ty);
        h
    }
    pub fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u8(&mut self, at: usize, v: u8) -> &mut Self {
        self.0[at] = v;
        self
    }
}

/// The BEGIN of a plain zvol send (hdrtype 1, no features, flags FREERECORDS|SPILL_BLOCK).
pub fn begin_header(to_name: &str, from_guid: u64, to_guid: u64) -> Header {
    let mut h = Header::new(drr::BEGIN);
    h.u64(8, MAGIC)
        .u64(16, DMU_SUBSTREAM)
        .u64(24, 1_700_000_000)
        .u32(32, DMU_OST_ZVOL)
        .u32(36, 0xC)
        .u64(40, to_guid)
        .u64(48, from_guid);
    let name = to_name.as_bytes();
    let n = name.len().min(255);
    h.0[56..56 + n].copy_from_slice(&name[..n]);
    h
}

/// Writes a stream record by record, keeping the running checksum.
pub struct StreamWriter {
    pub out: Vec<u8>,
    cksum: Fletcher4,
    to_guid: u64,
}

impl StreamWriter {
    /// A stream starting with `begin` (folded in whole, as BEGIN has no checksum field).
    pub fn with_begin(begin: &Header) -> Self {
        let mut cksum = Fletcher4::default();
        cksum.update(&begin.0);
        StreamWriter {
            out: begin.0.to_vec(),
            cksum,
            to_guid: u64::from_le_bytes(begin.0[40..48].try_into().unwrap_or_default()),
        }
    }

    pub fn new(to_name: &str, from_guid: u64, to_guid: u64) -> Self {
        Self::with_begin(&begin_header(to_name, from_guid, to_guid))
    }

    /// Any record: its checksum field is filled in, then the payload follows.
    pub fn record(&mut self, h: &Header, payload: &[u8]) -> &mut Self {
        let mut h = h.clone();
        self.cksum.update(&h.0[..CHECKSUMMED_LEN]);
        h.0[CHECKSUMMED_LEN..].copy_from_slice(&self.cksum.to_bytes());
        self.cksum.update(&h.0[CHECKSUMMED_LEN..]);
        self.cksum.update(payload);
        self.out.extend_from_slice(&h.0);
        self.out.extend_from_slice(payload);
        self
    }

    /// OBJECT for `object`: a zvol data object for 1, a ZAP (type 24) otherwise.
    pub fn object(&mut self, object: u64, blksz: u32, maxblkid: u64) -> &mut Self {
        let ty = if object == ZVOL_OBJ { DMU_OT_ZVOL } else { 24 };
        let mut h = Header::new(drr::OBJECT);
        h.u64(8, object)
            .u32(16, ty)
            .u32(24, blksz)
            .u64(40, self.to_guid);
        h.u64(56, maxblkid);
        self.record(&h, &[])
    }

    pub fn freeobjects(&mut self, first: u64, count: u64) -> &mut Self {
        let mut h = Header::new(drr::FREEOBJECTS);
        h.u64(8, first).u64(16, count).u64(24, self.to_guid);
        self.record(&h, &[])
    }

    pub fn write(&mut self, object: u64, offset: u64, data: &[u8]) -> &mut Self {
        let ty = if object == ZVOL_OBJ { DMU_OT_ZVOL } else { 24 };
        let mut h = Header::new(drr::WRITE);
        h.u64(8, object)
            .u32(16, ty)
            .u64(24, offset)
            .u64(32, data.len() as u64)
            .u64(40, self.to_guid);
        self.record(&h, data)
    }

    pub fn free(&mut self, object: u64, offset: u64, length: u64) -> &mut Self {
        let mut h = Header::new(drr::FREE);
        h.u64(8, object)
            .u64(16, offset)
            .u64(24, length)
            .u64(32, self.to_guid);
        self.record(&h, &[])
    }

    /// END with the checksum before it and BEGIN's guid; the finished stream.
    pub fn end(mut self) -> Vec<u8> {
        let mut h = Header::new(drr::END);
        h.0[8..40].copy_from_slice(&self.cksum.to_bytes());
        h.u64(40, self.to_guid);
        self.record(&h, &[]);
        self.out
    }
}

/// A full send of a 1 MiB zvol with 16K blocks: blocks 0, 1 and 5 written, the rest holes.
pub fn sample_full() -> Vec<u8> {
    let mut w = StreamWriter::new("rpool/data/vm-100-disk-0@full", 0, 0x1111);
    w.object(1, 16384, 5)
        .object(2, 512, 0)
        .freeobjects(3, 29)
        .free(1, 6 * 16384, u64::MAX)
        .write(1, 0, &[0xAA; 16384])
        .write(1, 16384, &[0xBB; 16384])
        .free(1, 2 * 16384, 3 * 16384)
        .write(1, 5 * 16384, &[0xCC; 16384])
        .write(2, 0, &[0x5A; 512]);
    w.end()
}

/// An incremental from guid 0x1111: block 1 rewritten, blocks 5..8 discarded, block 40
/// written, the tail FREE from block 41.
pub fn sample_incremental() -> Vec<u8> {
    let mut w = StreamWriter::new("rpool/data/vm-100-disk-0@inc", 0x1111, 0x2222);
    w.object(1, 16384, 40)
        .object(2, 512, 0)
        .free(1, 41 * 16384, u64::MAX)
        .write(1, 16384, &[0xDD; 16384])
        .free(1, 5 * 16384, 3 * 16384)
        .write(1, 40 * 16384, &[0xEE; 16384]);
    w.end()
}
