//! Proxmox's VMA backup format (PVE-FACTS §4.2; `vma_spec.txt`, `vma.h`): what
//! `vzdump --stdout` emits for a VM and what `qmrestore -` reads. Pure encoding and decoding;
//! `reader` checks a stream as it arrives, `writer` makes one.
//!
//! Layout: a header (12288 fixed bytes, then a blob area with config files and device
//! names), then extents until EOF. An extent is a 512-byte header naming up to 59 clusters
//! (64 KiB each, in 16 blocks of 4 KiB; a mask says which blocks follow, the others are
//! zero), then the blocks. Integers are big-endian except the 2-byte blob lengths. MD5 covers
//! the header (with its md5 field zeroed) and each extent header, never the data: the data
//! is verified by proxborg's own chunk ids once stored.
//!
//! Limits enforced before allocating: a header of at most `MAX_HEADER` bytes, at most 59
//! clusters an extent, cluster numbers inside their device, every cluster once.

pub mod reader;
pub mod writer;

use md5::{Digest, Md5};

pub const MAGIC: &[u8; 4] = b"VMA\0";
pub const EXTENT_MAGIC: &[u8; 4] = b"VMAE";
pub const VERSION: u32 = 1;
pub const HEADER_FIXED: usize = 12288;
pub const EXTENT_HEADER: usize = 512;
pub const CLUSTER: u64 = 65536;
pub const BLOCK: usize = 4096;
pub const BLOCKS_PER_CLUSTER: usize = 16;
/// Entries an extent header has room for (the writer uses at most 58).
pub const MAX_BLOCKINFO: usize = 59;
/// The writer's limit, as QEMU's.
pub const WRITER_CLUSTERS: usize = 58;
/// Config files and device names: 256 slots of at most 64 KiB each, rounded up.
pub const MAX_HEADER: usize = HEADER_FIXED + 256 * 65538 * 2;
const BLOB_BUFFER_OFFSET: usize = HEADER_FIXED;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmaError {
    #[error("VMA header: {0}")]
    Header(String),
    #[error("VMA extent at byte {offset}: {reason}")]
    Extent { offset: u64, reason: String },
    #[error("VMA stream ends early, at byte {0}")]
    Truncated(u64),
    #[error("VMA stream incomplete: device {device} lacks cluster {cluster}")]
    MissingCluster { device: String, cluster: u64 },
    #[error("VMA: {0}")]
    Invalid(String),
}

/// A VM disk in the stream: `dev_id` 1..=255 names it in extents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: u8,
    /// `drive-scsi0`, ... (without the trailing NUL).
    pub name: String,
    pub size: u64,
}

impl Device {
    /// Clusters that cover the device (the last one may reach past its end).
    pub fn clusters(&self) -> u64 {
        self.size.div_ceil(CLUSTER)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub uuid: [u8; 16],
    pub ctime: i64,
    /// Config files (`qemu-server.conf`, `qemu-server.fw`) in slot order.
    pub configs: Vec<(String, Vec<u8>)>,
    /// Devices in id order.
    pub devices: Vec<Device>,
}

impl Header {
    pub fn device(&self, id: u8) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }
}

pub(crate) fn md5(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// From the first `HEADER_FIXED` bytes: the whole header's size (checked against the
/// limits), so the caller knows how much more to read.
pub fn header_size(fixed: &[u8]) -> Result<usize, VmaError> {
    if fixed.len() < HEADER_FIXED {
        return Err(VmaError::Header("shorter than 12288 bytes".into()));
    }
    if &fixed[0..4] != MAGIC {
        return Err(VmaError::Header("not a VMA stream (bad magic)".into()));
    }
    let version = be32(fixed, 4);
    if version != VERSION {
        return Err(VmaError::Header(format!(
            "version {version}, only 1 is known"
        )));
    }
    let size = be32(fixed, 56) as usize;
    if !(HEADER_FIXED..=MAX_HEADER).contains(&size) {
        return Err(VmaError::Header(format!("header size {size} out of range")));
    }
    Ok(size)
}

/// Parses a complete header (`header_size` bytes), checking its MD5, blob offsets and
/// strings.
pub fn parse_header(bytes: &[u8]) -> Result<Header, VmaError> {
    let size = header_size(bytes)?;
    if bytes.len() != size {
        return Err(VmaError::Header(format!(
            "{} bytes given for a header of {size}",
            bytes.len()
        )));
    }
    let mut zeroed = bytes.to_vec();
    zeroed[32..48].fill(0);
    if md5(&zeroed) != bytes[32..48] {
        return Err(VmaError::Header("MD5 mismatch".into()));
    }
    let blob_offset = be32(bytes, 48) as usize;
    let blob_size = be32(bytes, 52) as usize;
    let blobs = blob_offset
        .checked_add(blob_size)
        .filter(|&end| blob_offset >= HEADER_FIXED && end <= size)
        .map(|end| &bytes[blob_offset..end])
        .ok_or_else(|| VmaError::Header("blob buffer outside the header".into()))?;
    let blob = |off: u32, what: &str| -> Result<&[u8], VmaError> {
        let off = off as usize;
        let len_end = off.checked_add(2).filter(|&e| off > 0 && e <= blobs.len());
        let Some(len_end) = len_end else {
            return Err(VmaError::Header(format!(
                "{what}: blob offset {off} out of range"
            )));
        };
        let len = usize::from(blobs[off]) | (usize::from(blobs[off + 1]) << 8);
        blobs
            .get(len_end..len_end + len)
            .ok_or_else(|| VmaError::Header(format!("{what}: blob at {off} overruns the buffer")))
    };
    let string = |off: u32, what: &str| -> Result<String, VmaError> {
        let b = blob(off, what)?;
        match b.split_last() {
            Some((0, text)) if !text.contains(&0) => String::from_utf8(text.to_vec())
                .map_err(|_| VmaError::Header(format!("{what}: not UTF-8"))),
            _ => Err(VmaError::Header(format!(
                "{what}: not a NUL-terminated string"
            ))),
        }
    };
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&bytes[8..24]);
    let ctime = be64(bytes, 24) as i64;
    let mut configs = Vec::new();
    for slot in 0..256 {
        let name_off = be32(bytes, 2044 + 4 * slot);
        let data_off = be32(bytes, 3068 + 4 * slot);
        if name_off == 0 && data_off == 0 {
            continue;
        }
        let name = string(name_off, "config name")?;
        configs.push((name, blob(data_off, "config data")?.to_vec()));
    }
    let mut devices = Vec::new();
    for id in 1..=255u8 {
        let at = 4096 + 32 * usize::from(id);
        let name_off = be32(bytes, at);
        if name_off == 0 {
            continue;
        }
        let name = string(name_off, "device name")?;
        let size = be64(bytes, at + 8);
        devices.push(Device { id, name, size });
    }
    Ok(Header {
        uuid,
        ctime,
        configs,
        devices,
    })
}

/// One cluster named in an extent header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// Bit i set: the 4 KiB block i of the cluster follows; clear: it is zero.
    pub mask: u16,
    pub dev_id: u8,
    pub cluster: u32,
}

impl BlockInfo {
    fn encode(&self) -> u64 {
        (u64::from(self.mask) << 48) | (u64::from(self.dev_id) << 32) | u64::from(self.cluster)
    }

    /// Bytes of data this cluster carries in the extent.
    pub fn data_len(&self) -> usize {
        self.mask.count_ones() as usize * BLOCK
    }
}

/// Parses a 512-byte extent header: magic, reserved, MD5, uuid, and that the block count
/// is what the masks say.
pub fn parse_extent_header(
    h: &[u8],
    uuid: &[u8; 16],
    offset: u64,
) -> Result<Vec<BlockInfo>, VmaError> {
    let bad = |reason: &str| VmaError::Extent {
        offset,
        reason: reason.to_string(),
    };
    if h.len() != EXTENT_HEADER {
        return Err(bad("short header"));
    }
    if &h[0..4] != EXTENT_MAGIC {
        return Err(bad("bad magic"));
    }
    if h[4..6] != [0, 0] {
        return Err(bad("reserved bytes are not zero"));
    }
    let mut zeroed = h.to_vec();
    zeroed[24..40].fill(0);
    if md5(&zeroed) != h[24..40] {
        return Err(bad("MD5 mismatch"));
    }
    if h[8..24] != uuid[..] {
        return Err(bad("uuid differs from the header's"));
    }
    let block_count = usize::from(u16::from_be_bytes([h[6], h[7]]));
    let mut infos = Vec::new();
    for i in 0..MAX_BLOCKINFO {
        let v = be64(h, 40 + 8 * i);
        let info = BlockInfo {
            mask: (v >> 48) as u16,
            dev_id: (v >> 32) as u8,
            cluster: v as u32,
        };
        if info.dev_id != 0 {
            infos.push(info);
        }
    }
    let blocks: usize = infos.iter().map(|i| i.mask.count_ones() as usize).sum();
    if blocks != block_count {
        return Err(bad(&format!(
            "block count {block_count}, but the masks name {blocks}"
        )));
    }
    Ok(infos)
}

/// An extent header for `infos` (at most `MAX_BLOCKINFO`).
pub fn extent_header(uuid: &[u8; 16], infos: &[BlockInfo]) -> [u8; EXTENT_HEADER] {
    let mut h = [0u8; EXTENT_HEADER];
    h[0..4].copy_from_slice(EXTENT_MAGIC);
    let blocks: u32 = infos.iter().map(|i| i.mask.count_ones()).sum();
    h[6..8].copy_from_slice(&(blocks as u16).to_be_bytes());
    h[8..24].copy_from_slice(uuid);
    for (i, info) in infos.iter().take(MAX_BLOCKINFO).enumerate() {
        h[40 + 8 * i..48 + 8 * i].copy_from_slice(&info.encode().to_be_bytes());
    }
    let sum = md5(&h);
    h[24..40].copy_from_slice(&sum);
    h
}

/// A header for `configs` and `devices` (ids 1, 2, ... in order).
pub fn build_header(
    uuid: &[u8; 16],
    ctime: i64,
    configs: &[(String, Vec<u8>)],
    devices: &[(String, u64)],
) -> Result<Vec<u8>, VmaError> {
    if configs.len() > 256 || devices.len() > 254 {
        return Err(VmaError::Invalid("too many configs or devices".into()));
    }
    // Offset 0 of the blob buffer is never used.
    let mut blobs = vec![0u8];
    let mut put = |data: &[u8]| -> Result<u32, VmaError> {
        let len = u16::try_from(data.len())
            .map_err(|_| VmaError::Invalid("a config or name over 64 KiB".into()))?;
        let off = u32::try_from(blobs.len()).map_err(|_| VmaError::Invalid("blobs".into()))?;
        blobs.extend_from_slice(&len.to_le_bytes());
        blobs.extend_from_slice(data);
        Ok(off)
    };
    let nul = |s: &str| [s.as_bytes(), b"\0"].concat();
    let mut fixed = vec![0u8; HEADER_FIXED];
    for (slot, (name, data)) in configs.iter().enumerate() {
        let n = put(&nul(name))?;
        let d = put(data)?;
        fixed[2044 + 4 * slot..2048 + 4 * slot].copy_from_slice(&n.to_be_bytes());
        fixed[3068 + 4 * slot..3072 + 4 * slot].copy_from_slice(&d.to_be_bytes());
    }
    for (i, (name, size)) in devices.iter().enumerate() {
        let at = 4096 + 32 * (i + 1);
        let n = put(&nul(name))?;
        fixed[at..at + 4].copy_from_slice(&n.to_be_bytes());
        fixed[at + 8..at + 16].copy_from_slice(&size.to_be_bytes());
    }
    let blob_size = blobs.len();
    let size = HEADER_FIXED + blob_size.div_ceil(512) * 512;
    fixed[0..4].copy_from_slice(MAGIC);
    fixed[4..8].copy_from_slice(&VERSION.to_be_bytes());
    fixed[8..24].copy_from_slice(uuid);
    fixed[24..32].copy_from_slice(&ctime.to_be_bytes());
    fixed[48..52].copy_from_slice(&(BLOB_BUFFER_OFFSET as u32).to_be_bytes());
    fixed[52..56].copy_from_slice(&(blob_size as u32).to_be_bytes());
    fixed[56..60].copy_from_slice(&(size as u32).to_be_bytes());
    let mut out = fixed;
    out.extend_from_slice(&blobs);
    out.resize(size, 0);
    let sum = md5(&out);
    out[32..48].copy_from_slice(&sum);
    Ok(out)
}
