//! Micro-benchmarks of the backup pipeline's stages, one core each: `cargo bench`.
//! Prints MB/s (or lookups/s) per stage; no timing thresholds, numbers are for the reader.

use proxborg::item::Kind;
use proxborg::repo::chunker::Chunker;
use proxborg::repo::crypto::{Crypto, Encoder};
use proxborg::repo::index::{Index, IndexFile, IndexedPack};
use proxborg::repo::key::Keys;
use proxborg::repo::pack::{BlobKind, PackBuilder, PackEntry};
use proxborg::repo::{ChunkId, ChunkerParams, Compression};
use std::time::Instant;

fn data(len: usize) -> Vec<u8> {
    // Half random, half text-like: compressible like a system tree, not trivially.
    let mut v = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(b"bench");
    h.finalize_xof().fill(&mut v);
    for (i, b) in v.iter_mut().enumerate() {
        if (i / 4096) % 2 == 0 {
            *b = b"the quick brown fox jumps over the lazy dog "[i % 44];
        }
    }
    v
}

fn report(name: &str, bytes: usize, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let s = t.elapsed().as_secs_f64();
    println!("{name:<36} {:>9.0} MB/s", bytes as f64 / s / 1e6);
}

fn main() {
    let buf = data(256 << 20);
    let chunker = Chunker::new(ChunkerParams::CONTENT, 0);
    report("fastcdc v2020 cut (1 MiB avg)", buf.len(), || {
        std::hint::black_box(chunker.cuts(&buf));
    });
    report("stream chunker (copies each chunk)", buf.len(), || {
        for c in chunker.stream(&buf[..]) {
            std::hint::black_box(c.unwrap());
        }
    });
    // A disk image's empty space: windows of zeros are cut without scanning.
    let zeros = vec![0u8; 256 << 20];
    report("stream chunker, all-zero data", zeros.len(), || {
        for c in chunker.stream(&zeros[..]) {
            std::hint::black_box(c.unwrap());
        }
    });
    report("blake3 (1 MiB blobs)", buf.len(), || {
        for c in buf.chunks(1 << 20) {
            std::hint::black_box(blake3::hash(c));
        }
    });
    let keyed = Crypto::encrypted(Keys::derive(&[7; 32]));
    for (name, crypto, comp) in [
        (
            "encode: zstd,3",
            Crypto::plain(),
            Compression::Zstd {
                level: 3,
                auto: false,
            },
        ),
        (
            "encode: zstd,3 + xchacha20poly1305",
            keyed.clone(),
            Compression::Zstd {
                level: 3,
                auto: false,
            },
        ),
        (
            "encode: none + xchacha20poly1305",
            keyed.clone(),
            Compression::None,
        ),
    ] {
        let mut enc = Encoder::default();
        report(name, 64 << 20, || {
            for c in buf[..64 << 20].chunks(1 << 20) {
                let id = crypto.blob_id(c);
                std::hint::black_box(crypto.encode_blob(&id, c, comp, &mut enc).unwrap());
            }
        });
    }
    let mut enc = Encoder::default();
    let stored: Vec<(ChunkId, Vec<u8>)> = buf[..64 << 20]
        .chunks(1 << 20)
        .map(|c| {
            let id = keyed.blob_id(c);
            (
                id,
                keyed
                    .encode_blob(&id, c, Compression::default(), &mut enc)
                    .unwrap(),
            )
        })
        .collect();
    report("decode: zstd + aead + verify", 64 << 20, || {
        for (id, s) in &stored {
            std::hint::black_box(keyed.decode_blob(id, s, 1 << 20).unwrap());
        }
    });
    report("pack building (16 MiB packs)", 64 << 20, || {
        let mut b = PackBuilder::default();
        for (id, s) in &stored {
            b.add(*id, BlobKind::Data, s, 1 << 20);
            if b.len() >= 16 << 20 {
                std::hint::black_box(std::mem::take(&mut b).finish(&keyed).unwrap());
            }
        }
    });

    // Index: lookups per second and memory per entry.
    let n = 2_000_000usize;
    let entries: Vec<PackEntry> = (0..n)
        .map(|i| PackEntry {
            id: ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes()),
            kind: BlobKind::Data,
            offset: i as u32,
            length: 1,
            raw_len: 1,
        })
        .collect();
    let rss_before = rss_kib();
    let packs: Vec<IndexedPack> = entries
        .chunks(1000)
        .enumerate()
        .map(|(p, chunk)| IndexedPack {
            pack: ChunkId(*blake3::hash(&p.to_le_bytes()).as_bytes()),
            blobs: chunk.to_vec(),
        })
        .collect();
    let file = IndexFile {
        packs,
        supersedes: Vec::new(),
    };
    let index = Index::from_files(vec![(ChunkId([0; 32]), file)]);
    let rss_after = rss_kib();
    let t = Instant::now();
    let mut found = 0;
    for e in &entries {
        found += index.contains(&e.id) as usize;
    }
    let s = t.elapsed().as_secs_f64();
    assert_eq!(found, n);
    println!(
        "{:<36} {:>9.1} M lookups/s",
        "index lookup (2M entries)",
        n as f64 / s / 1e6
    );
    println!(
        "{:<36} {:>9.1} bytes/entry (table), {:.1} (RSS growth incl. decoding)",
        "index memory",
        index.memory_bytes() as f64 / n as f64,
        (rss_after - rss_before) as f64 * 1024.0 / n as f64
    );
    let _ = Kind::File;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
