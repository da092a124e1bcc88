//! Writing a VMA stream: the header, then each device in turn, cut into 64 KiB clusters
//! (the last one zero-padded), all-zero 4 KiB blocks left out as the mask allows, at most 58
//! clusters per extent, as QEMU's writer does. Every cluster is present, zero ones as an
//! empty mask, so `vma verify` and `qmrestore` accept the result.

use super::{build_header, extent_header, BlockInfo, VmaError, BLOCK, CLUSTER, WRITER_CLUSTERS};
use std::io::{Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Vma(#[from] VmaError),
    #[error("reading device {device}: {source}")]
    Read {
        device: String,
        source: std::io::Error,
    },
    #[error("writing the VMA stream: {0}")]
    Write(std::io::Error),
}

pub struct VmaWriter<W> {
    out: W,
    uuid: [u8; 16],
    devices: Vec<(String, u64)>,
    next_device: usize,
}

impl<W: Write> VmaWriter<W> {
    /// Writes the header; the devices follow with `write_device`, in this order.
    pub fn new(
        mut out: W,
        uuid: [u8; 16],
        ctime: i64,
        configs: &[(String, Vec<u8>)],
        devices: Vec<(String, u64)>,
    ) -> Result<Self, WriteError> {
        let header = build_header(&uuid, ctime, configs, &devices)?;
        out.write_all(&header).map_err(WriteError::Write)?;
        Ok(VmaWriter {
            out,
            uuid,
            devices,
            next_device: 0,
        })
    }

    /// The next device's bytes: exactly its size is read from `data`.
    pub fn write_device(&mut self, data: &mut dyn Read) -> Result<(), WriteError> {
        let Some((name, size)) = self.devices.get(self.next_device).cloned() else {
            return Err(VmaError::Invalid("more devices written than declared".into()).into());
        };
        self.next_device += 1;
        let dev_id = self.next_device as u8;
        let clusters = size.div_ceil(CLUSTER);
        let mut infos = Vec::with_capacity(WRITER_CLUSTERS);
        let mut blocks = Vec::with_capacity(WRITER_CLUSTERS * CLUSTER as usize);
        let mut cluster = vec![0u8; CLUSTER as usize];
        for n in 0..clusters {
            let want = (size - n * CLUSTER).min(CLUSTER) as usize;
            cluster.fill(0);
            data.read_exact(&mut cluster[..want])
                .map_err(|source| WriteError::Read {
                    device: name.clone(),
                    source,
                })?;
            let mut mask = 0u16;
            for (i, block) in cluster.chunks_exact(BLOCK).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    mask |= 1 << i;
                    blocks.extend_from_slice(block);
                }
            }
            let cluster_num = u32::try_from(n)
                .map_err(|_| VmaError::Invalid(format!("device {name} is too large")))?;
            infos.push(BlockInfo {
                mask,
                dev_id,
                cluster: cluster_num,
            });
            if infos.len() == WRITER_CLUSTERS {
                self.flush(&mut infos, &mut blocks)?;
            }
        }
        self.flush(&mut infos, &mut blocks)
    }

    fn flush(
        &mut self,
        infos: &mut Vec<BlockInfo>,
        blocks: &mut Vec<u8>,
    ) -> Result<(), WriteError> {
        if infos.is_empty() {
            return Ok(());
        }
        let h = extent_header(&self.uuid, infos);
        self.out.write_all(&h).map_err(WriteError::Write)?;
        self.out.write_all(blocks).map_err(WriteError::Write)?;
        infos.clear();
        blocks.clear();
        Ok(())
    }

    /// Checks that every declared device was written; returns the output.
    pub fn finish(mut self) -> Result<W, WriteError> {
        if self.next_device != self.devices.len() {
            return Err(VmaError::Invalid("a declared device was not written".into()).into());
        }
        self.out.flush().map_err(WriteError::Write)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::reader::{ReadError, VmaReader};
    use super::super::*;
    use super::*;

    fn disk(size: usize, seed: u8) -> Vec<u8> {
        let mut d = vec![0u8; size];
        // Data, zero blocks and a zero cluster, so masks of every shape occur.
        for (i, b) in d.iter_mut().enumerate() {
            let block = i / BLOCK;
            if block % 3 != 0 && !(32..48).contains(&block) {
                *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
            }
        }
        d
    }

    fn write(configs: &[(String, Vec<u8>)], disks: &[(String, Vec<u8>)]) -> Vec<u8> {
        let devices = disks
            .iter()
            .map(|(n, d)| (n.clone(), d.len() as u64))
            .collect();
        let mut w = VmaWriter::new(Vec::new(), [7; 16], 1_700_000_000, configs, devices).unwrap();
        for (_, d) in disks {
            w.write_device(&mut d.as_slice()).unwrap();
        }
        w.finish().unwrap()
    }

    /// Reads a stream back into whole devices.
    fn read(stream: &[u8]) -> Result<(Header, Vec<Vec<u8>>), ReadError> {
        let mut r = VmaReader::new(stream)?;
        let header = r.header().clone();
        let mut disks: Vec<Vec<u8>> = header
            .devices
            .iter()
            .map(|d| vec![0u8; (d.clusters() * CLUSTER) as usize])
            .collect();
        let ids: Vec<u8> = header.devices.iter().map(|d| d.id).collect();
        while r.next_extent::<ReadError>(&mut |c| {
            let i = ids.iter().position(|&id| id == c.dev_id).unwrap();
            let at = c.offset as usize;
            c.expand(&mut disks[i][at..at + CLUSTER as usize]);
            Ok(())
        })? {}
        r.finish()?;
        for (d, dev) in disks.iter_mut().zip(&header.devices) {
            d.truncate(dev.size as usize);
        }
        Ok((header, disks))
    }

    /// Named byte strings: config files, or disks.
    type Named = Vec<(String, Vec<u8>)>;

    fn sample() -> (Named, Named) {
        let configs = vec![
            (
                "qemu-server.conf".to_string(),
                b"name: db\nmemory: 512\n".to_vec(),
            ),
            (
                "qemu-server.fw".to_string(),
                b"[OPTIONS]\nenable: 1\n".to_vec(),
            ),
        ];
        let disks = vec![
            (
                "drive-scsi0".to_string(),
                disk(5 * CLUSTER as usize + 12345, 1),
            ),
            ("drive-virtio1".to_string(), disk(70 * CLUSTER as usize, 2)),
        ];
        (configs, disks)
    }

    #[test]
    fn a_written_stream_reads_back_identical() {
        let (configs, disks) = sample();
        let stream = write(&configs, &disks);
        let (header, got) = read(&stream).unwrap();
        assert_eq!(header.configs, configs);
        assert_eq!(header.devices[1].name, "drive-virtio1");
        assert_eq!(header.devices[0].size, disks[0].1.len() as u64);
        for ((_, want), got) in disks.iter().zip(&got) {
            assert!(want == got);
        }
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let (configs, disks) = sample();
        let stream = write(&configs, &disks);
        let header_len = header_size(&stream).unwrap();
        // A flipped header byte, a flipped extent header byte, a cut stream, a lost extent.
        let mut h = stream.clone();
        h[100] ^= 1;
        assert!(matches!(read(&h), Err(ReadError::Vma(VmaError::Header(_)))));
        let mut e = stream.clone();
        e[header_len + 50] ^= 1;
        assert!(matches!(
            read(&e),
            Err(ReadError::Vma(VmaError::Extent { .. }))
        ));
        assert!(matches!(
            read(&stream[..stream.len() - 10]),
            Err(ReadError::Vma(VmaError::Truncated(_)))
        ));
        let first_extent = EXTENT_HEADER
            + parse_extent_header(&stream[header_len..header_len + EXTENT_HEADER], &[7; 16], 0)
                .unwrap()
                .iter()
                .map(BlockInfo::data_len)
                .sum::<usize>();
        let mut lost = stream[..header_len].to_vec();
        lost.extend_from_slice(&stream[header_len + first_extent..]);
        assert!(matches!(
            read(&lost),
            Err(ReadError::Vma(VmaError::MissingCluster { .. }))
        ));
        let mut twice = stream.clone();
        twice.extend_from_slice(&stream[header_len..header_len + first_extent]);
        assert!(matches!(
            read(&twice),
            Err(ReadError::Vma(VmaError::Extent { .. }))
        ));
        assert!(read(b"VMA\0").is_err());
        assert!(read(b"").is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20000), cut in 0usize..20000) {
            // Start from a valid stream half the time, so the parser gets past the magic.
            if cut % 2 == 0 {
                let (configs, disks) = sample();
                let mut s = write(&configs, &disks[..1]);
                let at = cut % s.len();
                for (i, b) in bytes.iter().take(64).enumerate() {
                    let j = (at + i) % s.len();
                    s[j] ^= b;
                }
                bytes = s;
            }
            let _ = read(&bytes);
        }
    }
}
