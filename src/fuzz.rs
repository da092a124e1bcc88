//! One entry point per decoder of untrusted bytes, for the `cargo fuzz` targets in `fuzz/` and
//! for the corpus replay in the normal test suite (`tests/fuzz_corpus.rs`), so both run exactly
//! the same code. Each takes arbitrary bytes, decodes them as the program would, uses what it
//! got the way the program does (lookups, sizes, the tar encoder) and throws the result away:
//! the only failure is a panic, an abort or an allocation above the decoder's documented limit.
//!
//! Sealed objects (pack headers, index files, archive files) carry a checksum or an AEAD tag a
//! fuzzer cannot forge, so their targets decode the unsealed body, and the pack target also
//! seals the input itself to drive the whole pack path. Nothing here touches the filesystem.

use crate::item::{codec, Item};
use crate::repo::crypto::Crypto;
use crate::repo::index::{Index, IndexFile};
use crate::repo::item_stream::ItemStreamReader;
use crate::repo::lock::LockInfo;
use crate::repo::pack::{self, PackEntry};
use crate::repo::{ChunkId, Manifest};
use std::io::Read;
use std::path::Path;

/// A fuzz entry point: any bytes in, nothing out, never a panic.
pub type Target = fn(&[u8]);

/// Every target: its name (the directory of its corpus and its `fuzz/fuzz_targets/*.rs`) and
/// its entry point.
pub const TARGETS: &[(&str, Target)] = &[
    ("pack", pack),
    ("blob", blob),
    ("index", index),
    ("manifest", manifest),
    ("item_stream", item_stream),
    ("tar_sparse", tar_sparse),
    ("files_cache", files_cache),
    ("lock", lock),
    ("pve_conf", pve_conf),
    ("storage_cfg", storage_cfg),
    ("user_cfg", user_cfg),
    ("vmlist", vmlist),
    ("idmap", idmap),
    ("settings", settings),
    ("zfs_output", zfs_output),
    ("vma", vma),
    ("zfs_send", zfs_send),
    ("wire", wire),
];

/// Runs the target called `name`; `false` if there is none.
pub fn run(name: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => {
            f(data);
            true
        }
        None => false,
    }
}

/// First byte even: the rest is a whole pack. Odd: the rest is a pack header body, sealed here
/// (unencrypted) behind a zeroed blob area of `64 * (byte >> 1)` bytes, and every entry the
/// header yields is sliced out and decoded as a blob.
pub fn pack(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let crypto = Crypto::plain();
    if mode & 1 == 0 {
        let _ = pack::decode_pack(&crypto, rest, "fuzz");
        return;
    }
    let mut bytes = vec![0u8; 64 * usize::from(mode >> 1)];
    let Ok(sealed) = crypto.seal(pack::HEADER_MAGIC, pack::HEADER_VERSION, rest) else {
        return;
    };
    bytes.extend_from_slice(&sealed);
    bytes.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    if let Ok(entries) = pack::decode_pack(&crypto, &bytes, "fuzz") {
        for e in entries {
            if let Ok(stored) = pack::blob_bytes(&bytes, &e, "fuzz") {
                let _ = crypto.decode_blob(&e.id, stored, e.raw_len as usize);
            }
        }
    }
}

/// `raw_len u32 LE ‖ stored blob`, decoded (unencrypted) against the id of its own tail.
pub fn blob(data: &[u8]) {
    let Some((len, stored)) = data.split_first_chunk::<4>() else {
        return;
    };
    let raw_len = u32::from_le_bytes(*len) as usize;
    let crypto = Crypto::plain();
    let id = crypto.blob_id(stored.get(1..).unwrap_or_default());
    let _ = crypto.decode_blob(&id, stored, raw_len);
    let _ = crypto.decode_blob(&ChunkId([0; 32]), stored, raw_len);
}

/// An index file body; what decodes is built into an in-memory index and looked up.
pub fn index(data: &[u8]) {
    let Ok(file) = IndexFile::decode_body(data, "fuzz") else {
        return;
    };
    let ids: Vec<ChunkId> = file
        .packs
        .iter()
        .flat_map(|p| p.blobs.iter().map(|b| b.id))
        .collect();
    let index = Index::from_files(vec![(ChunkId([0; 32]), file)]);
    for id in ids.iter().chain([&ChunkId([0xff; 32])]) {
        let _ = index.get(id);
    }
    let _ = index.memory_bytes();
}

/// An archive file body.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::decode_body(data, "fuzz") {
        let _ = crate::repo::archive::validate_name(&m.name);
    }
}

/// `expected items u8 ‖ piece size u8 ‖ stream`: the stream is handed to the reader in pieces
/// (as if each were a metadata blob), and every item is checked as extract and export check it.
pub fn item_stream(data: &[u8]) {
    let [expected, piece, stream @ ..] = data else {
        return;
    };
    let pieces: Vec<&[u8]> = stream.chunks(usize::from(*piece) + 1).collect();
    let ids: Vec<ChunkId> = (0..pieces.len())
        .map(|i| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            ChunkId(id)
        })
        .collect();
    let get = |id: &ChunkId| {
        let i = u64::from_le_bytes(id.0[..8].try_into().unwrap_or_default()) as usize;
        Ok(pieces.get(i).map(|p| p.to_vec()).unwrap_or_default())
    };
    let reader = ItemStreamReader::new(ids, get).expect_items(u64::from(*expected));
    for item in reader {
        let Ok(item) = item else { break };
        check_item(&item);
    }
}

fn check_item(item: &Item) {
    let _ = item.stored_len();
    if let Some(map) = &item.sparse {
        let _ = crate::item::checked_extents(map, item.size);
    }
}

/// One item record (`codec::decode_record`), written by the tar encoder with content of at
/// most 64 KiB: sparse maps, sizes, names, ids and times the encoder must refuse or encode.
pub fn tar_sparse(data: &[u8]) {
    let Ok(Some((item, _))) = codec::decode_record(data) else {
        return;
    };
    check_item(&item);
    let mut w = crate::export::TarWriter::new(std::io::sink());
    let mut content = std::io::repeat(0x55).take(64 << 10);
    if w.append(&item, &mut content).is_ok() {
        let _ = w.finish();
    }
}

/// A files cache file.
pub fn files_cache(data: &[u8]) {
    let _ = crate::files_cache::decode(data);
}

/// A lock object, judged for staleness against any clock.
pub fn lock(data: &[u8]) {
    if let Ok(info) = LockInfo::decode(data) {
        for now in [0, i64::MIN, i64::MAX, info.created, info.refreshed] {
            let _ = info.stale_reason("fuzz-host", now);
        }
        let _ = info.describe();
    }
}

/// A `proxborg serve` frame body, as a request and as a response; what decodes must encode
/// back to the same bytes.
pub fn wire(data: &[u8]) {
    use crate::remote::wire;
    if let Ok((id, req)) = wire::decode_request(data) {
        let again = wire::encode_request(id, &req).expect("a decoded request re-encodes");
        assert_eq!(&again[4..], data);
    }
    if let Ok((id, resp)) = wire::decode_response(data) {
        assert_eq!(
            wire::decode_response(&wire::encode_response(id, &resp)[4..]),
            Ok((id, resp))
        );
    }
}

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// A guest config, read as both kinds, and everything derived from it.
pub fn pve_conf(data: &[u8]) {
    use crate::pve::{self, GuestKind, Vmid};
    let t = text(data);
    let file = Path::new("fuzz.conf");
    for kind in [GuestKind::Lxc, GuestKind::Qemu] {
        let Ok(conf) = pve::parse_guest_config(kind, Vmid(100), file, &t) else {
            continue;
        };
        let _ = conf.hostname();
        let _ = conf.unprivileged();
        let _ = pve::IdMap::from_config(&conf, file);
        let _ = pve::lxc_mounts(&conf, file);
        let _ = pve::qemu_disks(&conf, file);
    }
    let _ = pve::vzdump_pct_conf(&t);
}

/// `storage.cfg`, and the dataset of a few volume names on every storage it defines.
pub fn storage_cfg(data: &[u8]) {
    let Ok(mut cfg) = crate::pve::parse_storage_cfg(Path::new("storage.cfg"), &text(data)) else {
        return;
    };
    cfg.ensure_local_dir();
    for s in &cfg.storages {
        for vol in ["subvol-100-disk-0", "base-1-disk-0/vm-2-disk-1", "vm-", "x"] {
            let _ = cfg.volume_dataset(&s.id, vol);
        }
    }
}

/// `user.cfg` (its pool lines).
pub fn user_cfg(data: &[u8]) {
    let _ = crate::pve::parse_user_cfg_pools(Path::new("user.cfg"), &text(data));
}

/// `.vmlist`.
pub fn vmlist(data: &[u8]) {
    let _ = crate::pve::parse_vmlist(Path::new(".vmlist"), &text(data));
}

/// `lxc.idmap` lines, a NUL, then a `security.capability` value translated through the map.
pub fn idmap(data: &[u8]) {
    use crate::pve::{IdKind, IdMap, IdMapEntry};
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (lines, cap) = data.split_at(split);
    let cap = cap.get(1..).unwrap_or_default();
    let entries: Vec<IdMapEntry> = text(lines).lines().filter_map(IdMapEntry::parse).collect();
    let Ok(map) = IdMap::new(entries) else {
        return;
    };
    let _ = crate::pve::translate_capability(&map, cap);
    for id in [0, 1, 65535, 100_000, u32::MAX] {
        let _ = map.host_to_ct(IdKind::Uid, id);
        let _ = map.ct_to_host(IdKind::Gid, id);
    }
    let _ = map.fuse_overlayfs_options();
    let _ = map.usernsexec_args();
}

/// `/etc/proxborg.conf`.
pub fn settings(data: &[u8]) {
    let _ = crate::settings::parse(&text(data), "proxborg.conf");
}

/// `zfs list` / `zfs get` output, through all three parsers and the name validators.
pub fn zfs_output(data: &[u8]) {
    use crate::zfs::names::{DatasetName, SnapshotName};
    let t = text(data);
    let _ = crate::zfs::parse::parse_list(&t);
    let _ = crate::zfs::parse::parse_get(&t);
    let _ = crate::zfs::parse::parse_get_sourced(&t);
    if let Ok(points) = crate::zfs::zvol::parse_points(&t) {
        // the bookmark rules take what a zvol's listing says
        let _ = crate::zfs::zvol::may_move_bookmark(&points);
        let _ =
            crate::zfs::zvol::bookmarks_to_remove(&points, "proxborg-ab-", Some("x#proxborg-ab-1"));
        let _ = crate::zfs::zvol::rollback_blockers(&points);
        for p in &points {
            let _ = crate::zfs::zvol::base_is_usable(&points, &p.name, p.guid);
        }
    }
    for l in t.lines() {
        if let Ok(d) = DatasetName::new(l) {
            let _ = (d.pool(), d.leaf(), d.parent(), d.snapshot("proxborg-x"));
        }
        let _ = crate::zfs::zvol::BookmarkName::parse(l).map(|b| b.mark().len());
        if let Ok(s) = SnapshotName::new(l) {
            let _ = (s.dataset(), s.snap());
        }
    }
}

/// A VMA stream as vzdump pipes it: the header, every extent's clusters expanded, the
/// completeness check at the end.
pub fn vma(data: &[u8]) {
    use crate::vma::reader::{ReadError, VmaReader};
    let Ok(mut reader) = VmaReader::new(data) else {
        return;
    };
    let mut cluster = vec![0u8; crate::vma::CLUSTER as usize];
    while let Ok(true) = reader.next_extent::<ReadError>(&mut |c| {
        c.expand(&mut cluster);
        Ok(())
    }) {}
    let _ = reader.finish();
}

/// `piece size u8 ‖ stream`: a zvol's `zfs send` stream, handed to the reader at most
/// `piece + 1` bytes a read (0: all at once), every event folded into the changed ranges of a
/// 64 MiB volume as direct zvol mode does, and the touched 4 MiB chunks counted.
pub fn zfs_send(data: &[u8]) {
    use crate::zfs::send::{touched_chunks, ChangeSet, SendStreamReader, CHUNK_SIZE};
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = if piece == 0 {
        usize::MAX
    } else {
        usize::from(piece) + 1
    };
    let mut reader = SendStreamReader::new(Pieces(stream, piece));
    let mut changes = ChangeSet::new(64 << 20);
    while let Ok(Some(event)) = reader.next_event() {
        if changes.add(&event).is_err() {
            return;
        }
    }
    let ranges = changes.finish();
    let _ = touched_chunks(&ranges, CHUNK_SIZE);
    let _ = touched_chunks(&ranges, 4096);
}

/// A reader returning at most `.1` bytes a call, as a pipe may.
struct Pieces<'a>(&'a [u8], usize);

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.1).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// Seed inputs for every target, made by the encoders: what `fuzz/corpus/<target>/` holds.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    seeds::all()
}

mod seeds {
    use super::*;
    use crate::item::{ChunkRef, Extent, Kind, Timestamp, Xattr};
    use crate::repo::archive::ArchiveStats;
    use crate::repo::compression::Compression;
    use crate::repo::crypto::Encoder;
    use crate::repo::index::IndexedPack;
    use crate::repo::pack::{BlobKind, PackBuilder};
    use std::collections::BTreeMap;

    fn sample_items() -> Vec<Item> {
        let mut f = Item::new("etc/hosts", Kind::File);
        f.mode = 0o644;
        f.size = 12;
        f.mtime = Timestamp {
            secs: 1_700_000_000,
            nanos: 5,
        };
        f.chunks = vec![ChunkRef {
            id: ChunkId([7; 32]),
            len: 12,
        }];
        f.xattrs = vec![Xattr {
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
        }];
        let mut s = Item::new("var/sparse", Kind::File);
        s.size = 1 << 20;
        s.sparse = Some(vec![
            Extent { offset: 0, len: 5 },
            Extent {
                offset: 8192,
                len: 7,
            },
        ]);
        s.chunks = vec![ChunkRef {
            id: ChunkId([8; 32]),
            len: 12,
        }];
        vec![
            Item::new("", Kind::Dir),
            f,
            s,
            Item::new(
                "lnk",
                Kind::Symlink {
                    target: b"etc/hosts".to_vec(),
                },
            ),
            Item::new(
                "hard",
                Kind::Hardlink {
                    target: b"etc/hosts".to_vec(),
                },
            ),
        ]
    }

    fn entry(i: u8, offset: u32, length: u32) -> PackEntry {
        PackEntry {
            id: ChunkId([i; 32]),
            kind: BlobKind::Data,
            offset,
            length,
            raw_len: length.saturating_sub(1),
        }
    }

    pub(super) fn all() -> Vec<(&'static str, String, Vec<u8>)> {
        let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
        let mut add = |t: &'static str, name: &str, bytes: Vec<u8>| {
            out.push((t, name.to_string(), bytes));
        };
        let crypto = Crypto::plain();
        let mut enc = Encoder::default();

        // pack: a real pack, and header bodies behind a blob area.
        let mut b = PackBuilder::default();
        let mut blob_seeds = Vec::new();
        for data in [&b"hello hello hello hello"[..], &[0u8; 300][..]] {
            let id = crypto.blob_id(data);
            let stored = crypto
                .encode_blob(&id, data, Compression::default(), &mut enc)
                .unwrap_or_default();
            let mut seed = (data.len() as u32).to_le_bytes().to_vec();
            seed.extend_from_slice(&stored);
            blob_seeds.push(seed);
            b.add(id, BlobKind::Data, &stored, data.len() as u32);
        }
        if let Ok((_, bytes, entries)) = b.finish(&crypto) {
            add("pack", "whole", [&[0u8][..], &bytes].concat());
            let body = postcard::to_allocvec(&entries).unwrap_or_default();
            add("pack", "header", [&[3u8][..], &body].concat());
        }
        let body = postcard::to_allocvec(&vec![entry(1, 0, 10), entry(2, 10, 20)]);
        add(
            "pack",
            "two",
            [&[1u8][..], &body.unwrap_or_default()].concat(),
        );
        for (i, s) in blob_seeds.into_iter().enumerate() {
            add("blob", &format!("blob-{i}"), s);
        }
        add("blob", "raw", [&3u32.to_le_bytes()[..], b"\0abc"].concat());

        // index
        let file = IndexFile {
            packs: vec![
                IndexedPack {
                    pack: ChunkId([1; 32]),
                    blobs: vec![entry(3, 0, 10), entry(4, 10, 10)],
                },
                IndexedPack {
                    pack: ChunkId([2; 32]),
                    blobs: vec![entry(5, 0, 100)],
                },
            ],
            supersedes: vec![ChunkId([9; 32])],
        };
        add(
            "index",
            "two-packs",
            postcard::to_allocvec(&file).unwrap_or_default(),
        );
        add(
            "index",
            "empty",
            postcard::to_allocvec(&IndexFile::default()).unwrap_or_default(),
        );

        // manifest
        let mut metadata = BTreeMap::new();
        metadata.insert("kind".to_string(), serde_json::json!("lxc-files"));
        metadata.insert("vmid".to_string(), serde_json::json!(100));
        let m = Manifest {
            name: "ct-100-2026-11-23T06:00:00Z".into(),
            start: "2026-11-23T06:00:00Z".into(),
            end: "2026-11-23T06:01:00Z".into(),
            hostname: "pve1".into(),
            tool_version: "0.1.0".into(),
            metadata,
            item_stream: vec![ChunkId([4; 32])],
            stats: ArchiveStats {
                items: 3,
                ..Default::default()
            },
            notes: "before the upgrade".into(),
            protected: true,
            revision: 2,
        };
        add("manifest", "ct", serde_json::to_vec(&m).unwrap_or_default());

        // item stream and tar: records made by the codec.
        let items = sample_items();
        let mut stream = codec::header();
        for it in &items {
            let mut rec = Vec::new();
            if codec::encode_record(it, &mut rec).is_ok() {
                add("tar_sparse", &format!("item-{}", stream.len()), rec.clone());
                stream.extend_from_slice(&rec);
            }
        }
        add(
            "item_stream",
            "five",
            [&[items.len() as u8, 40][..], &stream].concat(),
        );
        add(
            "item_stream",
            "one-piece",
            [&[5u8, 255][..], &stream].concat(),
        );

        // files cache: saved by the cache itself.
        if let Some(bytes) = files_cache_seed(&items) {
            add("files_cache", "two", bytes);
        }

        // lock
        let info = LockInfo {
            kind: crate::repo::lock::LockKind::Shared,
            host: "pve1".into(),
            pid: 4242,
            command: "create".into(),
            created: 1_700_000_000,
            refreshed: 1_700_000_060,
        };
        add(
            "lock",
            "shared",
            serde_json::to_vec(&info).unwrap_or_default(),
        );

        // PVE and host text: the golden fixtures are the real thing; these are small samples.
        add("pve_conf", "ct", b"#web%3A front\narch: amd64\nhostname: web\nmemory: 512\nrootfs: local-zfs:subvol-100-disk-0,size=8G\nmp0: local-zfs:subvol-100-disk-1,mp=/data,backup=1\nunprivileged: 1\nlxc.idmap: u 0 100000 65536\nlxc.idmap: g 0 100000 65536\n\n[pve:pending]\nmemory: 1024\n\n[snap1]\nsnaptime: 1700000000\n".to_vec());
        add("pve_conf", "vm", b"name: vm\nscsi0: local-zfs:vm-200-disk-0,size=32G\nide2: none,media=cdrom\nefidisk0: local-zfs:vm-200-disk-1,size=1M\nbios: ovmf\n[PENDING]\ncores: 4\n[special:cloudinit]\nipconfig0: ip=dhcp\n".to_vec());
        add("storage_cfg", "default", b"dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\nzfspool: local-zfs\n\tpool rpool/data\n\tsparse\n\tcontent images,rootdir\n".to_vec());
        add("user_cfg", "pools", b"user:root@pam:1:0:::root@example.com:::\npool:prod:Production%20guests:100,101,200:local-zfs:\npool:prod/sub::102::\n".to_vec());
        add("vmlist", "two", br#"{"version": 7, "ids": {"100": {"node": "pve1", "type": "lxc", "version": 3}, "200": {"node": "pve2", "type": "qemu", "version": 1}}}"#.to_vec());
        let mut cap = b"u 0 100000 65536\ng 0 100000 65536\n\0".to_vec();
        cap.extend_from_slice(&0x0300_0001u32.to_le_bytes());
        cap.extend_from_slice(&[0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        cap.extend_from_slice(&100_000u32.to_le_bytes());
        add("idmap", "v3", cap);
        add("settings", "full", b"# proxborg\nrepo: /srv/repo\npassphrase-file: /etc/pass\ncompression: auto,zstd,5\nexclude: /tmp/*\nkeep-daily: 7\nkeep-within: 2d\nprune: 1\ntargets: 100: tank:! @prod\nlock-wait: 30\n".to_vec());
        add("zfs_output", "list", b"rpool\t/rpool\tfilesystem\nrpool/data/vm-200-disk-0\t-\tvolume\nrpool/data/subvol-100-disk-0@proxborg-20261123T071900Z\t-\tsnapshot\nrpool/legacy\tlegacy\tfilesystem\n".to_vec());
        add("vma", "two-drives", {
            use crate::vma::writer::VmaWriter;
            let configs = [("qemu-server.conf".to_string(), b"name: db\n".to_vec())];
            let disks: [(&str, Vec<u8>); 2] = [
                ("drive-scsi0", [vec![0u8; 70000], vec![9u8; 5000]].concat()),
                ("drive-virtio1", vec![1u8; 4096]),
            ];
            let devices = disks
                .iter()
                .map(|(n, d)| (n.to_string(), d.len() as u64))
                .collect();
            let mut w = VmaWriter::new(Vec::new(), [5; 16], 1_700_000_000, &configs, devices)
                .expect("a VMA");
            for (_, d) in &disks {
                w.write_device(&mut d.as_slice()).expect("a VMA");
            }
            w.finish().expect("a VMA")
        });
        add(
            "zfs_send",
            "full",
            [&[0u8][..], &crate::zfs::send::test_support::sample_full()].concat(),
        );
        add(
            "zfs_send",
            "incremental-pieces",
            [
                &[100u8][..],
                &crate::zfs::send::test_support::sample_incremental(),
            ]
            .concat(),
        );
        add("zfs_output", "get", b"rpool\tguid\t212755847572743819\t-\nrpool/data\tproxborg:run\trun-7f3a\twith tab\tlocal\n".to_vec());
        out
    }

    fn files_cache_seed(items: &[Item]) -> Option<Vec<u8>> {
        use crate::files_cache::{FilesCache, Mode};
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("files");
        let start = Timestamp {
            secs: 1_800_000_000,
            nanos: 0,
        };
        let mut c = FilesCache::load(path.clone(), Mode::CtimeSizeInode, 20, start);
        for (i, it) in items.iter().filter(|i| i.is_file()).enumerate() {
            c.remember(FilesCache::key("src", &it.path), it, i as u64);
        }
        c.save().ok()?;
        std::fs::read(&path).ok()
    }
}
