//! A minimal reader of Proxmox VMA streams (PVE-FACTS §4.2), for tests only: it checks what the
//! `vma` tool checks (magics, version, the header and extent MD5s, the uuid, NUL-terminated
//! strings, every cluster of every device present exactly once) and reassembles each device's
//! bytes in memory. It never panics on malformed input: every problem is an `Err` naming the
//! offset. Not for production use: it holds whole devices in memory.

#![allow(dead_code)]

use std::collections::HashSet;

const HEADER_FIXED: usize = 12288;
const EXTENT_HEADER: usize = 512;
const CLUSTER: u64 = 65536;
const BLOCK: usize = 4096;
const MAX_BLOCKINFO: usize = 59;

#[derive(Debug)]
pub struct Vma {
    pub uuid: [u8; 16],
    pub ctime: i64,
    /// (name, data) in config slot order.
    pub configs: Vec<(String, Vec<u8>)>,
    /// Devices in dev_id order.
    pub devices: Vec<Device>,
    pub extents: usize,
}

#[derive(Debug)]
pub struct Device {
    pub id: u8,
    pub name: String,
    pub size: u64,
    pub data: Vec<u8>,
}

impl Vma {
    pub fn config(&self, name: &str) -> Option<&[u8]> {
        self.configs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_slice())
    }
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }
}

fn be_u32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn be_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

/// A blob at `off` in the blob buffer: little-endian u16 length, then the data.
fn blob(buf: &[u8], off: u32) -> Result<&[u8], String> {
    let off = off as usize;
    if off == 0 {
        return Err("blob offset 0 is invalid".into());
    }
    if off + 2 > buf.len() {
        return Err(format!(
            "blob offset {off} past the blob buffer ({} bytes)",
            buf.len()
        ));
    }
    let len = buf[off] as usize | (buf[off + 1] as usize) << 8;
    buf.get(off + 2..off + 2 + len)
        .ok_or_else(|| format!("blob at {off} with length {len} overruns the blob buffer"))
}

fn blob_str(buf: &[u8], off: u32) -> Result<String, String> {
    let b = blob(buf, off)?;
    match b.split_last() {
        Some((0, s)) => {
            String::from_utf8(s.to_vec()).map_err(|_| format!("string blob at {off} is not UTF-8"))
        }
        _ => Err(format!("string blob at {off} lacks its trailing NUL")),
    }
}

pub fn parse(bytes: &[u8]) -> Result<Vma, String> {
    if bytes.len() < HEADER_FIXED {
        return Err(format!(
            "stream of {} bytes is shorter than a VMA header",
            bytes.len()
        ));
    }
    if &bytes[0..4] != b"VMA\0" {
        return Err("bad header magic".into());
    }
    let version = be_u32(bytes, 4);
    if version != 1 {
        return Err(format!("unsupported VMA version {version}"));
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&bytes[8..24]);
    let ctime = be_u64(bytes, 24) as i64;
    let blob_off = be_u32(bytes, 48) as usize;
    let blob_size = be_u32(bytes, 52) as usize;
    let header_size = be_u32(bytes, 56) as usize;
    if header_size < HEADER_FIXED || header_size > bytes.len() {
        return Err(format!("header_size {header_size} out of range"));
    }
    if blob_off < HEADER_FIXED || blob_off + blob_size > header_size {
        return Err(format!(
            "blob buffer {blob_off}+{blob_size} outside the header ({header_size})"
        ));
    }
    let mut header = bytes[..header_size].to_vec();
    let want: [u8; 16] = header[32..48].try_into().map_err(|_| "short md5")?;
    header[32..48].fill(0);
    if md5(&header) != want {
        return Err("header md5 mismatch".into());
    }
    let blobs = &bytes[blob_off..blob_off + blob_size];

    let mut configs = Vec::new();
    for i in 0..256 {
        let name_ptr = be_u32(bytes, 2044 + 4 * i);
        let data_ptr = be_u32(bytes, 3068 + 4 * i);
        if name_ptr == 0 && data_ptr == 0 {
            continue;
        }
        configs.push((blob_str(blobs, name_ptr)?, blob(blobs, data_ptr)?.to_vec()));
    }
    let mut devices: Vec<Device> = Vec::new();
    let mut slot_of = [usize::MAX; 256];
    // dev_id 0 is reserved and 255 unused by the writer
    for (id, slot) in slot_of.iter_mut().enumerate().take(255).skip(1) {
        let base = 4096 + 32 * id;
        let name_ptr = be_u32(bytes, base);
        if name_ptr == 0 {
            continue;
        }
        let size = be_u64(bytes, base + 8);
        let len = usize::try_from(size).map_err(|_| format!("device {id} too large"))?;
        *slot = devices.len();
        devices.push(Device {
            id: id as u8,
            name: blob_str(blobs, name_ptr)?,
            size,
            data: vec![0u8; len],
        });
    }

    let mut seen: HashSet<(u8, u32)> = HashSet::new();
    let mut pos = header_size;
    let mut extents = 0;
    while pos < bytes.len() {
        let h = bytes
            .get(pos..pos + EXTENT_HEADER)
            .ok_or_else(|| format!("truncated extent header at {pos}"))?;
        if &h[0..4] != b"VMAE" {
            return Err(format!("bad extent magic at {pos}"));
        }
        if h[4] != 0 || h[5] != 0 {
            return Err(format!("extent at {pos}: reserved field is not zero"));
        }
        if h[8..24] != uuid {
            return Err(format!("extent at {pos}: uuid differs from the header"));
        }
        let mut hz = h.to_vec();
        hz[24..40].fill(0);
        if md5(&hz) != h[24..40] {
            return Err(format!("extent at {pos}: md5 mismatch"));
        }
        let block_count = u16::from_be_bytes([h[6], h[7]]) as usize;
        let mut data = pos + EXTENT_HEADER;
        let end = data + block_count * BLOCK;
        if end > bytes.len() {
            return Err(format!(
                "extent at {pos}: {block_count} blocks overrun the stream"
            ));
        }
        let mut used = 0;
        for i in 0..MAX_BLOCKINFO {
            let bi = be_u64(h, 40 + 8 * i);
            let dev_id = ((bi >> 32) & 0xff) as u8;
            if dev_id == 0 {
                continue;
            }
            let mask = (bi >> 48) as u16;
            let cluster = (bi & 0xffff_ffff) as u32;
            let slot = slot_of[dev_id as usize];
            let dev = devices
                .get_mut(slot)
                .ok_or_else(|| format!("extent at {pos}: unknown dev_id {dev_id}"))?;
            if u64::from(cluster) * CLUSTER >= dev.size.max(1) {
                return Err(format!(
                    "extent at {pos}: cluster {cluster} past the end of {}",
                    dev.name
                ));
            }
            if !seen.insert((dev_id, cluster)) {
                return Err(format!(
                    "found duplicated cluster {cluster} of {}",
                    dev.name
                ));
            }
            for b in 0..16u64 {
                if mask & (1 << b) == 0 {
                    continue;
                }
                if used >= block_count {
                    return Err(format!(
                        "extent at {pos}: masks name more blocks than block_count"
                    ));
                }
                let off = u64::from(cluster) * CLUSTER + b * BLOCK as u64;
                let src = &bytes[data..data + BLOCK];
                // blocks past the device end are carried in the stream but are not device bytes
                if off < dev.size {
                    let n = (dev.size - off).min(BLOCK as u64) as usize;
                    dev.data[off as usize..off as usize + n].copy_from_slice(&src[..n]);
                }
                data += BLOCK;
                used += 1;
            }
        }
        if used != block_count {
            return Err(format!(
                "extent at {pos}: block_count {block_count}, masks name {used}"
            ));
        }
        pos = end;
        extents += 1;
    }
    for dev in &devices {
        for c in 0..dev.size.div_ceil(CLUSTER) {
            if !seen.contains(&(dev.id, c as u32)) {
                return Err(format!("detected missing cluster {c} of {}", dev.name));
            }
        }
    }
    Ok(Vma {
        uuid,
        ctime,
        configs,
        devices,
        extents,
    })
}

/// MD5 (RFC 1321); VMA uses it only as a checksum.
pub fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    let mut msg = input.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((input.len() as u64).wrapping_mul(8)).to_le_bytes());
    for chunk in msg.chunks_exact(64) {
        let m: Vec<u32> = chunk
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, v) in [a0, b0, c0, d0].iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}
