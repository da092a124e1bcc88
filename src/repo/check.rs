//! `check`: find every kind of damage a repository can suffer, and name it.
//!
//! Structure (always): the config parses; every index file decodes; every pack an index names
//! exists, its sealed header decodes and agrees with the index entry for entry; every archive
//! file decodes; every archive's item stream decodes and every blob it references (metadata
//! and content) is in the index. Data (`verify_data`, all packs or a random `percent` of them,
//! as backy's scrub does): each chosen pack is read whole, its id re-hashed, and every blob
//! decrypted, decompressed and re-hashed against its id.
//!
//! Notes and protection are part of the sealed manifest, so decoding it authenticates them;
//! notes must also be valid (`archive::validate_notes`). Files superseded by a newer revision
//! of the same archive (a crash while rewriting notes or protection) are counted, not problems:
//! readers ignore them and `compact` deletes them. A protected archive that the client's
//! security record saw at a higher revision (an older file put back) is a problem.
//!
//! Check never repairs; it reports. A problem is one line naming the object at fault.
//! `repair` fixes what can be fixed; what it moved aside (`*.bad`) is counted, not a problem.

use super::backend::Backend;
use super::crypto::Crypto;
use super::error::{RepoError, Result};
use super::id::ChunkId;
use super::index::{Index, IndexFile};
use super::pack::{self, pack_key, PackEntry};
use super::repair::SET_ASIDE;
use super::{Manifest, Repository};
use crate::repo::item_stream::ItemStreamReader;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    pub verify_data: bool,
    /// With `verify_data`: re-hash only this share of the packs, chosen at random.
    pub percent: Option<f64>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub problems: Vec<String>,
    pub index_files: u64,
    pub packs: u64,
    pub unreferenced_packs: u64,
    pub archives: u64,
    pub superseded_archive_files: u64,
    pub protected_archives: u64,
    pub items: u64,
    pub packs_verified: u64,
    pub blobs_verified: u64,
    pub bytes_verified: u64,
    /// Damaged packs and archive files `check --repair` moved aside (`<key>.bad`): kept for
    /// a human to look at, read by nothing.
    pub set_aside: u64,
    /// Files with lost content that `check --repair` recorded in their archive: not problems.
    pub damaged_files: u64,
}

impl CheckReport {
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<CheckReport> {
    let backend = repo.backend().as_ref();
    let crypto = repo.crypto();
    let mut report = CheckReport::default();

    progress("index files");
    let (index, packs_named) = read_indexes(backend, crypto, &mut report)?;

    progress("pack headers");
    check_packs(backend, crypto, &packs_named, &mut report)?;

    progress("archives");
    check_archives(repo, &index, &mut report)?;
    let list = repo.list_archives()?;
    report.superseded_archive_files = list.superseded.len() as u64;
    report.protected_archives = list.archives.iter().filter(|(_, m)| m.protected).count() as u64;
    report.problems.extend(list.rolled_back.into_values());

    if opts.verify_data {
        let mut chosen: Vec<&ChunkId> = packs_named.keys().collect();
        if let Some(p) = opts.percent {
            let want = ((chosen.len() as f64 * p / 100.0).ceil() as usize).min(chosen.len());
            shuffle(&mut chosen)?;
            chosen.truncate(want);
            chosen.sort();
        }
        for (n, id) in chosen.iter().enumerate() {
            progress(&format!("verifying pack {}/{}", n + 1, chosen.len()));
            verify_pack(backend, crypto, id, &mut report)?;
        }
    }
    Ok(report)
}

/// Per pack, the entries the index files list for it.
type PacksNamed = BTreeMap<ChunkId, Vec<PackEntry>>;

/// Decodes every index file; returns the merged index and, per pack, the entries the index
/// files list for it.
fn read_indexes(
    backend: &dyn Backend,
    crypto: &Crypto,
    report: &mut CheckReport,
) -> Result<(Arc<Index>, PacksNamed)> {
    let mut files = Vec::new();
    for key in backend.list("index")? {
        report.index_files += 1;
        let Some(id) = key.rsplit('/').next().and_then(ChunkId::from_hex) else {
            report
                .problems
                .push(format!("{key}: not an index file name"));
            continue;
        };
        let decoded = backend
            .get(&key)
            .and_then(|bytes| IndexFile::decode(crypto, &bytes, &key));
        match decoded {
            Ok(f) => files.push((id, f)),
            Err(e) => report.problems.push(format!("{key}: {e}")),
        }
    }
    let mut named: BTreeMap<ChunkId, Vec<PackEntry>> = BTreeMap::new();
    let index = Index::from_files(files.clone());
    let live: std::collections::HashSet<ChunkId> = index.packs().iter().copied().collect();
    for (_, f) in files {
        for p in f.packs {
            if live.contains(&p.pack) {
                named.entry(p.pack).or_insert(p.blobs);
            }
        }
    }
    Ok((Arc::new(index), named))
}

fn check_packs(
    backend: &dyn Backend,
    crypto: &Crypto,
    named: &BTreeMap<ChunkId, Vec<PackEntry>>,
    report: &mut CheckReport,
) -> Result<()> {
    let (aside, present): (Vec<String>, Vec<String>) = backend
        .list("data")?
        .into_iter()
        .partition(|k| k.ends_with(SET_ASIDE));
    report.set_aside += aside.len() as u64;
    let present: std::collections::HashSet<String> = present.into_iter().collect();
    report.unreferenced_packs = present
        .iter()
        .filter(|k| pack::pack_id_from_key(k).is_none_or(|id| !named.contains_key(&id)))
        .count() as u64;
    for (id, entries) in named {
        report.packs += 1;
        let key = pack_key(id);
        if !present.contains(&key) {
            report
                .problems
                .push(format!("{key}: missing (named by an index file)"));
            continue;
        }
        match read_header(backend, crypto, &key) {
            Ok(header) => {
                if !same_entries(&header, entries) {
                    report
                        .problems
                        .push(format!("{key}: header does not match the index"));
                }
            }
            Err(e) => report.problems.push(format!("{key}: {e}")),
        }
    }
    Ok(())
}

fn read_header(backend: &dyn Backend, crypto: &Crypto, key: &str) -> Result<Vec<PackEntry>> {
    let size = backend.size(key)?;
    if size < 4 {
        return Err(RepoError::corrupt(key, format!("only {size} bytes")));
    }
    let trailer = backend.get_range(key, size - 4, 4)?;
    let (offset, len) = pack::header_range(size, &trailer)?;
    let sealed = backend.get_range(key, offset, len)?;
    pack::decode_header(crypto, &sealed, offset, key)
}

fn same_entries(a: &[PackEntry], b: &[PackEntry]) -> bool {
    let sorted = |v: &[PackEntry]| {
        let mut v = v.to_vec();
        v.sort_by_key(|e| (e.offset, e.id));
        v
    };
    sorted(a) == sorted(b)
}

fn check_archives(repo: &Repository, index: &Arc<Index>, report: &mut CheckReport) -> Result<()> {
    let backend = repo.backend();
    // Reads go through the index built here (which may differ from the repository's if
    // index files are damaged), so a missing blob is reported, not silently found elsewhere.
    let source = super::reader::BlobSource {
        backend: backend.clone(),
        crypto: repo.crypto().clone(),
        index: index.clone(),
    };
    for key in backend.list("archives")? {
        if key.ends_with(SET_ASIDE) {
            report.set_aside += 1;
            continue;
        }
        report.archives += 1;
        let manifest = match backend.get(&key).and_then(|b| {
            // The file name is the BLAKE3 of the stored bytes: a file moved, swapped or copied
            // under another archive's name is a problem even if it decodes.
            if key.rsplit('/').next() != Some(ChunkId::of(&b).to_hex().as_str()) {
                report.problems.push(format!(
                    "{key}: its content does not match its name (archive files swapped, copied or renamed)"
                ));
            }
            Manifest::decode(repo.crypto(), &b, &key)
        }) {
            Ok(m) => m,
            Err(e) => {
                report.problems.push(format!("{key}: {e}"));
                continue;
            }
        };
        if let Err(e) = super::archive::validate_notes(&manifest.notes) {
            report
                .problems
                .push(format!("archive {:?} ({key}): {e}", manifest.name));
        }
        let mut missing: HashMap<ChunkId, String> = HashMap::new();
        let items = ItemStreamReader::new(manifest.item_stream.clone(), |id| source.read_blob(id))
            .expect_items(manifest.stats.items);
        for item in items {
            match item {
                Ok(item) => {
                    report.items += 1;
                    for c in &item.chunks {
                        if !index.contains(&c.id) {
                            missing
                                .entry(c.id)
                                .or_insert_with(|| crate::item::display_path(&item.path));
                        }
                    }
                }
                Err(e) => {
                    report.problems.push(format!(
                        "archive {:?} ({key}): item stream: {e}",
                        manifest.name
                    ));
                    break;
                }
            }
        }
        // Files `check --repair` marked damaged in this archive are known losses, not new
        // problems (its report named them; `list` marks them; a new backup heals them).
        let known = super::repair::recorded_damage(&manifest);
        let mut known_damaged = std::collections::HashSet::new();
        for (id, path) in missing {
            if known.as_ref().is_some_and(|k| k.covers(&path)) {
                known_damaged.insert(path);
                continue;
            }
            report.problems.push(format!(
                "archive {:?}: {path} references missing blob {id}",
                manifest.name
            ));
        }
        report.damaged_files += known_damaged.len() as u64;
    }
    Ok(())
}

fn verify_pack(
    backend: &dyn Backend,
    crypto: &Crypto,
    id: &ChunkId,
    report: &mut CheckReport,
) -> Result<()> {
    let key = pack_key(id);
    let bytes = match backend.get(&key) {
        Ok(b) => b,
        Err(RepoError::NotFound(_)) => return Ok(()), // already reported as missing
        Err(e) => return Err(e),
    };
    report.packs_verified += 1;
    report.bytes_verified += bytes.len() as u64;
    if ChunkId::of(&bytes) != *id {
        report
            .problems
            .push(format!("{key}: contents do not match its name (damaged)"));
    }
    let entries = match pack::decode_pack(crypto, &bytes, &key) {
        Ok(e) => e,
        Err(e) => {
            report.problems.push(format!("{key}: {e}"));
            return Ok(());
        }
    };
    for e in entries {
        report.blobs_verified += 1;
        let decoded = pack::blob_bytes(&bytes, &e, &key)
            .and_then(|stored| crypto.decode_blob(&e.id, stored, e.raw_len as usize));
        if let Err(err) = decoded {
            report.problems.push(format!("{key}: blob {}: {err}", e.id));
        }
    }
    Ok(())
}

/// Fisher-Yates with a random seed; the choice only needs to be unpredictable, not secure.
fn shuffle<T>(v: &mut [T]) -> Result<()> {
    let seed: [u8; 8] = super::key::random_bytes()?;
    let mut x = u64::from_le_bytes(seed) | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    Ok(())
}
