//! `compact`: give back the space of blobs no archive references.
//!
//! The safety rule (how compact coexists with running backups):
//!
//! 1. Mark (under a shared lock, so backups keep running): every blob referenced by every
//!    archive file present now is live. Packs with no live blob become deletion candidates;
//!    packs whose dead share is at least the threshold are repacked: their live blobs are
//!    copied, as stored, into new packs, indexed by a new index file (purely additive), and
//!    the old packs become candidates.
//! 2. Sweep (under the exclusive lock, which waits for every running backup to finish and
//!    holds new ones back): every archive written since the mark started is marked too; a
//!    candidate that holds the only copy of a blob such an archive references is kept (a backup
//!    that ran during the mark may have deduplicated against it). Then one merged index file
//!    naming every surviving pack is written, superseding all current index files; the old
//!    index files are deleted; and only then the candidate packs and packs no index names
//!    (left by killed backups).
//!
//! 3. Also under the exclusive lock: archive files superseded by a newer revision of the same
//!    archive (a crash while `archive note`/`protect` rewrote it) are deleted. The current file
//!    of every archive, with its notes and protection, is left exactly as it is.
//!
//! A backup that starts after the sweep loads the merged index, so it never sees a deleted
//! pack. A crash at any point leaves either the old index files (everything still there) or
//! the merged one (naming only packs that exist): `check` passes either way.

use super::backend::Backend;
use super::error::{RepoError, Result};
use super::id::ChunkId;
use super::index::{index_key, IndexFile, IndexedPack};
use super::lock::{Lock, LockKind};
use super::pack::{pack_id_from_key, pack_key, BlobKind, PackBuilder, PackEntry, TARGET_SIZE};
use super::{Manifest, Repository};
use crate::repo::item_stream::ItemStreamReader;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct CompactOptions {
    /// Repack a pack once at least this share (percent) of its bytes is unreferenced.
    pub threshold_percent: f64,
    pub lock_wait: Duration,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CompactReport {
    pub archives: u64,
    pub live_blobs: u64,
    pub packs_before: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub packs_written: u64,
    pub packs_kept_for_new_archives: u64,
    pub bytes_before: u64,
    pub bytes_deleted: u64,
    pub bytes_written: u64,
    pub index_files_merged: u64,
    pub superseded_archive_files_deleted: u64,
}

impl CompactReport {
    pub fn bytes_freed(&self) -> i64 {
        self.bytes_deleted as i64 - self.bytes_written as i64
    }
}

pub fn compact(
    repo: &Repository,
    opts: &CompactOptions,
    warn: &mut dyn FnMut(String),
) -> Result<CompactReport> {
    if repo.append_only() {
        return Err(RepoError::AppendOnly("compact"));
    }
    let backend = repo.backend().clone();
    let mut report = CompactReport::default();

    // --- 1. mark -----------------------------------------------------------------------
    let shared = Lock::acquire(
        backend.clone(),
        LockKind::Shared,
        "compact (mark)",
        opts.lock_wait,
        warn,
    )?;
    let (marked_archives, live) = mark_all(repo, &HashSet::new())?;
    report.archives = marked_archives.len() as u64;
    report.live_blobs = live.len() as u64;
    let files = read_index_files(repo)?;
    let index = super::index::Index::from_files(files.clone());
    let packs = packs_of(&files, &index);
    let sizes = pack_sizes(backend.as_ref())?;
    report.packs_before = sizes.len() as u64;
    report.bytes_before = sizes.values().sum();

    let mut candidates: HashSet<ChunkId> = HashSet::new();
    let mut to_repack = Vec::new();
    for (pack, entries) in &packs {
        let Some(&size) = sizes.get(pack) else {
            continue;
        };
        let owned: Vec<&PackEntry> = entries
            .iter()
            .filter(|e| index.get(&e.id).map(|(p, _)| p) == Some(*pack))
            .collect();
        let live_bytes: u64 = owned
            .iter()
            .filter(|e| live.contains(&e.id))
            .map(|e| e.length as u64)
            .sum();
        // Dead = blobs nobody needs (including other packs' copies); the header is not dead
        // space: a repacked pack needs one too.
        let blob_bytes: u64 = entries.iter().map(|e| e.length as u64).sum();
        let dead = blob_bytes.saturating_sub(live_bytes);
        if live_bytes == 0 {
            candidates.insert(*pack);
        } else if dead > 0 && dead as f64 * 100.0 >= opts.threshold_percent * size as f64 {
            to_repack.push(*pack);
        }
    }
    if !opts.dry_run {
        let written = repack(repo, &to_repack, &packs, &index, &live)?;
        report.packs_written = written.packs;
        report.bytes_written = written.bytes;
        candidates.extend(to_repack.iter().copied());
        // A repacked pack can come out byte-identical to one it replaces (same name): the
        // new copy is the old file, so it must not be deleted.
        for id in &written.ids {
            candidates.remove(id);
        }
    } else {
        candidates.extend(to_repack.iter().copied());
    }
    report.packs_repacked = to_repack.len() as u64;
    drop(shared);
    if opts.dry_run {
        report.packs_deleted = candidates.len() as u64;
        report.bytes_deleted = candidates.iter().filter_map(|p| sizes.get(p)).sum();
        return Ok(report);
    }

    // --- 2. sweep ----------------------------------------------------------------------
    let _exclusive = Lock::acquire(
        backend.clone(),
        LockKind::Exclusive,
        "compact (sweep)",
        opts.lock_wait,
        warn,
    )?;
    let (_, live_new) = mark_all(repo, &marked_archives)?;
    let files = read_index_files(repo)?;
    let mut holders: HashMap<ChunkId, Vec<ChunkId>> = HashMap::new();
    let mut surviving: BTreeMap<ChunkId, Vec<PackEntry>> = BTreeMap::new();
    for (_, f) in &files {
        for p in &f.packs {
            surviving.entry(p.pack).or_insert_with(|| p.blobs.clone());
        }
    }
    for (pack, entries) in &surviving {
        for e in entries {
            if live_new.contains(&e.id) {
                holders.entry(e.id).or_default().push(*pack);
            }
        }
    }
    for (_, packs_holding) in holders {
        if packs_holding.iter().all(|p| candidates.contains(p))
            && candidates.remove(&packs_holding[0])
        {
            report.packs_kept_for_new_archives += 1;
        }
    }
    surviving.retain(|p, _| !candidates.contains(p));
    let merged = IndexFile {
        packs: surviving
            .into_iter()
            .map(|(pack, blobs)| IndexedPack { pack, blobs })
            .collect(),
        supersedes: files.iter().map(|(id, _)| *id).collect(),
    };
    let named: HashSet<ChunkId> = merged.packs.iter().map(|p| p.pack).collect();
    let bytes = merged.encode(repo.crypto())?;
    backend.put(&index_key(&ChunkId::of(&bytes)), &bytes)?;
    for (id, _) in &files {
        backend.delete(&index_key(id))?;
    }
    report.index_files_merged = files.len() as u64;
    // Candidates, plus packs that no index names at all (killed backups): no backup runs
    // now, so nothing can be about to index them.
    for key in backend.list("data")? {
        let Some(id) = pack_id_from_key(&key) else {
            continue;
        };
        if !named.contains(&id) {
            let size = backend.size(&key).unwrap_or(0);
            match backend.delete(&key) {
                Ok(()) => {
                    report.packs_deleted += 1;
                    report.bytes_deleted += size;
                }
                Err(RepoError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for stale in repo.list_archives()?.superseded {
        repo.delete_archive_file(&stale.id)?;
        report.superseded_archive_files_deleted += 1;
    }
    Ok(report)
}

/// Every blob referenced by the archives not in `skip`; returns the archives marked too.
fn mark_all(
    repo: &Repository,
    skip: &HashSet<String>,
) -> Result<(HashSet<String>, HashSet<ChunkId>)> {
    let backend = repo.backend();
    let mut marked = HashSet::new();
    let mut live = HashSet::new();
    let source = super::reader::BlobSource {
        backend: backend.clone(),
        crypto: repo.crypto().clone(),
        // Archives written by backups that ran during the mark are only in index files
        // written since this repository was opened: read with a fresh index.
        index: Arc::new(super::index::Index::from_files(read_index_files(repo)?)),
    };
    for key in backend.list("archives")? {
        if skip.contains(&key) {
            continue;
        }
        let manifest = match backend.get(&key) {
            Ok(bytes) => Manifest::decode(repo.crypto(), &bytes, &key)?,
            Err(RepoError::NotFound(_)) => continue, // pruned meanwhile
            Err(e) => return Err(e),
        };
        live.extend(manifest.item_stream.iter().copied());
        let items = ItemStreamReader::new(manifest.item_stream.clone(), |id| source.read_blob(id))
            .expect_items(manifest.stats.items);
        for item in items {
            let item = item.map_err(|e| {
                RepoError::corrupt(
                    format!("archive {:?}", manifest.name),
                    format!("{e}; compact refuses to guess what is live: run check"),
                )
            })?;
            live.extend(item.chunks.iter().map(|c| c.id));
        }
        marked.insert(key);
    }
    Ok((marked, live))
}

fn read_index_files(repo: &Repository) -> Result<Vec<(ChunkId, IndexFile)>> {
    let backend = repo.backend();
    let mut out = Vec::new();
    for key in backend.list("index")? {
        let Some(id) = key.rsplit('/').next().and_then(ChunkId::from_hex) else {
            continue;
        };
        match backend.get(&key) {
            Ok(bytes) => out.push((id, IndexFile::decode(repo.crypto(), &bytes, &key)?)),
            Err(RepoError::NotFound(_)) => {} // superseded and deleted meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Per live pack (not superseded), its entries.
fn packs_of(
    files: &[(ChunkId, IndexFile)],
    index: &super::index::Index,
) -> BTreeMap<ChunkId, Vec<PackEntry>> {
    let live: HashSet<&ChunkId> = index.packs().iter().collect();
    let mut out = BTreeMap::new();
    for (_, f) in files {
        for p in &f.packs {
            if live.contains(&p.pack) {
                out.entry(p.pack).or_insert_with(|| p.blobs.clone());
            }
        }
    }
    out
}

fn pack_sizes(backend: &dyn Backend) -> Result<HashMap<ChunkId, u64>> {
    let mut out = HashMap::new();
    for key in backend.list("data")? {
        if let Some(id) = pack_id_from_key(&key) {
            out.insert(id, backend.size(&key)?);
        }
    }
    Ok(out)
}

struct Written {
    packs: u64,
    bytes: u64,
    ids: Vec<ChunkId>,
}

/// Copies the live blobs of `packs` (stored bytes as they are: no re-encryption needed) into
/// new packs, and indexes them in one new index file.
fn repack(
    repo: &Repository,
    packs: &[ChunkId],
    entries_of: &BTreeMap<ChunkId, Vec<PackEntry>>,
    index: &super::index::Index,
    live: &HashSet<ChunkId>,
) -> Result<Written> {
    let backend = repo.backend();
    let mut builders: HashMap<BlobKind, PackBuilder> = HashMap::new();
    let mut done: Vec<IndexedPack> = Vec::new();
    let mut written = Written {
        packs: 0,
        bytes: 0,
        ids: Vec::new(),
    };
    let mut copied = HashSet::new();
    let mut flush = |b: PackBuilder, done: &mut Vec<IndexedPack>| -> Result<()> {
        let (id, bytes, entries) = b.finish(repo.crypto())?;
        backend.put(&pack_key(&id), &bytes)?;
        written.packs += 1;
        written.bytes += bytes.len() as u64;
        written.ids.push(id);
        done.push(IndexedPack {
            pack: id,
            blobs: entries,
        });
        Ok(())
    };
    for pack in packs {
        let bytes = backend.get(&pack_key(pack))?;
        if ChunkId::of(&bytes) != *pack {
            return Err(RepoError::corrupt(
                pack_key(pack),
                "contents do not match its name; compact stops: run check",
            ));
        }
        for e in entries_of.get(pack).map(Vec::as_slice).unwrap_or_default() {
            let owner = index.get(&e.id).map(|(p, _)| p);
            if owner != Some(*pack) || !live.contains(&e.id) || !copied.insert(e.id) {
                continue;
            }
            let stored = bytes
                .get(e.offset as usize..(e.offset as usize + e.length as usize))
                .ok_or_else(|| RepoError::corrupt(pack_key(pack), "blob outside the pack"))?;
            let b = builders.entry(e.kind).or_default();
            b.add(e.id, e.kind, stored, e.raw_len);
            if b.len() >= TARGET_SIZE {
                let full = std::mem::take(b);
                flush(full, &mut done)?;
            }
        }
    }
    for (_, b) in builders {
        if !b.is_empty() {
            flush(b, &mut done)?;
        }
    }
    if !done.is_empty() {
        let file = IndexFile {
            packs: done,
            supersedes: Vec::new(),
        };
        let bytes = file.encode(repo.crypto())?;
        backend.put(&index_key(&ChunkId::of(&bytes)), &bytes)?;
    }
    Ok(written)
}
