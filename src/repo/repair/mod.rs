//! `check --repair`: bring a damaged repository back to one `check --verify-data` passes,
//! losing nothing that can still be read. The decisions are in `plan` (pure); this module
//! reads, and then writes in an order that a crash at any point leaves a repository a second
//! repair finishes:
//!
//! 1. Under the exclusive lock (no backup runs; nothing is deleted in append-only mode), read
//!    every index file and every pack whole: a pack is good when its id matches its bytes,
//!    its header decodes and every blob verifies; anything else is damaged.
//! 2. Readable blobs of damaged packs that no good pack holds are copied, as stored, into new
//!    packs (salvage).
//! 3. One new index file names the good and the salvage packs and supersedes every index
//!    file there was; only then are the old ones deleted.
//! 4. Each damaged pack is copied to `data/XX/<id>.bad` and only then deleted: nothing is
//!    lost that a later hand could still read, and no index names it any more.
//! 5. Archives are checked against the new index. One whose item stream cannot be read to the
//!    end gets a new item stream of the items that could be read; one with files whose
//!    content is lost records them (`metadata.repaired`, which `list` and `extract` don't
//!    need: they see the missing blobs themselves). The new manifest keeps the name, records
//!    which archive file it `replaces`, and is written before the old one is deleted; a
//!    repair that finds both deletes the replaced one.
//! 6. An archive file that cannot be decoded is moved aside as `archives/<id>.bad`.
//!
//! Damaged files keep their chunk references: a later backup of the same data stores the
//! lost blobs again (they are not in the index), which makes those files whole again, and
//! the next repair takes the mark off.

pub mod plan;

use super::backend::Backend;
use super::crypto::Crypto;
use super::error::{RepoError, Result};
use super::id::ChunkId;
use super::index::{index_key, Index, IndexFile, IndexedPack};
use super::item_stream::{ItemStreamReader, ItemStreamWriter};
use super::lock::{Lock, LockKind};
use super::pack::{self, pack_id_from_key, pack_key, BlobKind, PackBuilder, TARGET_SIZE};
use super::reader::BlobSource;
use super::{archive, Manifest, Repository};
use plan::{ArchiveAction, ArchiveScan, CurrentIndex, PackState};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The suffix of an object moved aside: no reader lists it, nothing deletes it.
pub const SET_ASIDE: &str = ".bad";

/// A pack larger than this is not read into memory: no writer makes one (packs close at
/// `TARGET_SIZE` plus one blob), so it is damaged and moved aside whole.
const MAX_PACK: u64 = 1 << 30;

#[derive(Clone, Debug)]
pub struct RepairOptions {
    pub dry_run: bool,
    pub lock_wait: Duration,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PackRepair {
    pub key: String,
    pub why: String,
    pub blobs_salvaged: u64,
    pub blobs_lost: u64,
    /// Archives that used a blob lost with this pack.
    pub used_by: Vec<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ArchiveRepair {
    pub name: String,
    pub id: String,
    /// `rewritten`, `rebuilt` (new item stream), `healed`, or `deleted (replaced by <id>)`.
    pub action: String,
    pub damaged_files: Vec<String>,
    pub damaged_count: u64,
    /// Items that could not be read back from a damaged item stream.
    pub lost_items: u64,
    pub problem: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairReport {
    pub dry_run: bool,
    pub index_files: u64,
    pub damaged_index_files: Vec<String>,
    pub index_rebuilt: bool,
    pub packs_scanned: u64,
    pub packs_unindexed: Vec<String>,
    /// Packs the index files named that do not exist (their `why` says so).
    pub packs_missing: Vec<PackRepair>,
    pub packs_set_aside: Vec<PackRepair>,
    pub blobs_salvaged: u64,
    pub blobs_lost: u64,
    pub archives_checked: u64,
    pub archives: Vec<ArchiveRepair>,
    /// `archives/<id>` files that could not be decoded, with why: moved aside.
    pub archives_set_aside: Vec<String>,
    /// Object keys written (packs, index file, archives, `.bad` copies).
    pub written: Vec<String>,
}

impl RepairReport {
    /// Whether the repair changed (or, dry, would change) anything.
    pub fn changes(&self) -> bool {
        self.index_rebuilt || !self.archives.is_empty() || !self.archives_set_aside.is_empty()
    }

    /// Whether data is gone for good (files or items that cannot be restored).
    pub fn data_lost(&self) -> bool {
        self.blobs_lost > 0
            || !self.archives_set_aside.is_empty()
            || self
                .archives
                .iter()
                .any(|a| a.damaged_count > 0 || a.lost_items > 0)
    }
}

pub fn repair(
    repo: &mut Repository,
    opts: &RepairOptions,
    warn: &mut dyn FnMut(String),
    progress: &mut dyn FnMut(&str),
) -> Result<RepairReport> {
    if !opts.dry_run && repo.append_only() {
        return Err(RepoError::AppendOnly("check --repair"));
    }
    let backend = repo.backend().clone();
    let crypto = repo.crypto().clone();
    // A dry run writes nothing, not even a lock object.
    let _lock = if opts.dry_run {
        None
    } else {
        Some(Lock::acquire(
            backend.clone(),
            LockKind::Exclusive,
            "check --repair",
            opts.lock_wait,
            warn,
        )?)
    };
    let mut report = RepairReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };

    progress("index files");
    let (current, index_ids) = read_current_index(backend.as_ref(), &crypto, &mut report)?;

    let mut scans = BTreeMap::new();
    let packs: Vec<(ChunkId, String)> = backend
        .list("data")?
        .into_iter()
        .filter(|k| !k.ends_with(SET_ASIDE))
        .filter_map(|k| Some((pack_id_from_key(&k)?, k)))
        .collect();
    for (n, (id, key)) in packs.iter().enumerate() {
        progress(&format!("reading pack {}/{}", n + 1, packs.len()));
        let state = scan_pack(backend.as_ref(), &crypto, key, current.packs.get(id))?;
        scans.insert(*id, state);
    }
    report.packs_scanned = scans.len() as u64;
    let iplan = plan::plan_index(&scans, &current);
    report.index_rebuilt = iplan.rewrite_index;
    report.packs_unindexed = iplan.unindexed.iter().map(pack_key).collect();
    report.blobs_salvaged = iplan.salvage.len() as u64;
    report.blobs_lost = iplan.lost.len() as u64;

    // The index as it will be: good packs, and salvaged blobs where they are now (verified).
    let mut salvage_by_pack: BTreeMap<ChunkId, Vec<pack::PackEntry>> = BTreeMap::new();
    for (p, e) in &iplan.salvage {
        salvage_by_pack.entry(*p).or_default().push(*e);
    }
    let after = Arc::new(Index::from_files(vec![(
        ChunkId([0; 32]),
        IndexFile {
            packs: iplan
                .keep
                .iter()
                .chain(&salvage_by_pack)
                .map(|(p, b)| IndexedPack {
                    pack: *p,
                    blobs: b.clone(),
                })
                .collect(),
            supersedes: Vec::new(),
        },
    )]));

    progress("archives");
    let source = BlobSource {
        backend: backend.clone(),
        crypto: crypto.clone(),
        index: after,
    };
    let (archives, unreadable) = read_archives(backend.as_ref(), &crypto)?;
    report.archives_checked = (archives.len() + unreadable.len()) as u64;
    report.archives_set_aside = unreadable
        .iter()
        .map(|(k, why)| format!("{k}: {why}"))
        .collect();
    let successors: HashMap<ChunkId, ChunkId> = archives
        .iter()
        .filter_map(|(id, m)| Some((replaces(m)?, *id)))
        .filter(|(old, new)| old != new)
        .collect();
    let mut actions = Vec::new();
    let mut uses: Vec<(String, ChunkId)> = Vec::new();
    for (id, m) in &archives {
        let (mut scan, missing) = scan_archive(&source, m);
        scan.replaced_by = successors.get(id).copied();
        uses.extend(missing.into_iter().map(|b| (m.name.clone(), b)));
        let action = plan::plan_archive(&scan);
        if action != ArchiveAction::Keep {
            actions.push((*id, m, scan, action));
        }
    }
    let users =
        plan::users_of_lost_packs(&iplan.lost, uses.iter().map(|(name, b)| (name.as_str(), b)));
    for (pack, why) in &iplan.set_aside {
        report.packs_set_aside.push(PackRepair {
            key: pack_key(pack),
            why: why.clone(),
            blobs_salvaged: iplan.salvage.iter().filter(|(p, _)| p == pack).count() as u64,
            blobs_lost: iplan.lost.values().filter(|p| *p == pack).count() as u64,
            used_by: users.get(pack).into_iter().flatten().cloned().collect(),
        });
    }
    for pack in &iplan.missing {
        report.packs_missing.push(PackRepair {
            key: pack_key(pack),
            why: "missing (named by an index file)".into(),
            blobs_salvaged: 0,
            blobs_lost: iplan.lost.values().filter(|p| *p == pack).count() as u64,
            used_by: users.get(pack).into_iter().flatten().cloned().collect(),
        });
    }
    for (id, m, scan, action) in &actions {
        report.archives.push(describe(id, m, scan, action));
    }
    if opts.dry_run {
        return Ok(report);
    }

    // --- writing, in crash-safe order -------------------------------------------------------
    if iplan.rewrite_index {
        progress("salvaging blobs");
        let salvaged = salvage(
            backend.as_ref(),
            &crypto,
            &salvage_by_pack,
            &mut report.written,
        )?;
        progress("writing the index");
        let file = IndexFile {
            packs: iplan
                .keep
                .iter()
                .map(|(p, b)| IndexedPack {
                    pack: *p,
                    blobs: b.clone(),
                })
                .chain(salvaged)
                .collect(),
            supersedes: index_ids.clone(),
        };
        let bytes = file.encode(&crypto)?;
        let key = index_key(&ChunkId::of(&bytes));
        backend.put(&key, &bytes)?;
        report.written.push(key.clone());
        for id in &index_ids {
            if index_key(id) != key {
                delete_if_there(backend.as_ref(), &index_key(id))?;
            }
        }
        for (pack, _) in &iplan.set_aside {
            let key = pack_key(pack);
            set_aside(backend.as_ref(), &key)?;
            report.written.push(format!("{key}{SET_ASIDE}"));
        }
    }
    repo.reload_index()?;

    for (id, m, scan, action) in &actions {
        progress(&format!("archive {}", m.name));
        match action {
            ArchiveAction::Keep => {}
            ArchiveAction::DeleteReplaced(_) => {
                delete_if_there(backend.as_ref(), &archive::archive_key(id))?
            }
            ArchiveAction::Rewrite { rebuild_stream } => {
                let new = rewrite_archive(repo, id, m, scan, *rebuild_stream)?;
                report.written.push(archive::archive_key(&new));
                if new != *id {
                    delete_if_there(backend.as_ref(), &archive::archive_key(id))?;
                }
            }
        }
    }
    for (key, _) in &unreadable {
        set_aside(backend.as_ref(), key)?;
        report.written.push(format!("{key}{SET_ASIDE}"));
    }
    Ok(report)
}

/// The index files in effect (superseded ones left out, as readers do), their ids, and one
/// report line per index file that cannot be read.
fn read_current_index(
    backend: &dyn Backend,
    crypto: &Crypto,
    report: &mut RepairReport,
) -> Result<(CurrentIndex, Vec<ChunkId>)> {
    let mut files = Vec::new();
    let mut ids = Vec::new();
    let mut current = CurrentIndex::default();
    for key in backend.list("index")? {
        report.index_files += 1;
        let Some(id) = key.rsplit('/').next().and_then(ChunkId::from_hex) else {
            continue;
        };
        ids.push(id);
        match backend
            .get(&key)
            .and_then(|b| IndexFile::decode(crypto, &b, &key))
        {
            Ok(f) => files.push((id, f)),
            Err(e) if e.is_corruption() => {
                current.damaged_files += 1;
                report.damaged_index_files.push(e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    let index = Index::from_files(files.clone());
    let live: HashSet<&ChunkId> = index.packs().iter().collect();
    for (_, f) in files {
        for p in f.packs {
            if live.contains(&p.pack) {
                current.packs.entry(p.pack).or_insert(p.blobs);
            }
        }
    }
    Ok((current, ids))
}

/// Reads one pack whole and sorts its blobs into readable and not. Where the header cannot
/// be decoded, the entries the index files listed for the pack locate its blobs instead.
fn scan_pack(
    backend: &dyn Backend,
    crypto: &Crypto,
    key: &str,
    indexed: Option<&Vec<pack::PackEntry>>,
) -> Result<PackState> {
    let id = pack_id_from_key(key).expect("listed by id");
    let size = backend.size(key)?;
    if size > MAX_PACK {
        return Ok(PackState::Damaged {
            why: format!("{size} bytes, larger than any pack proxborg writes"),
            readable: Vec::new(),
            unreadable: indexed.into_iter().flatten().map(|e| e.id).collect(),
        });
    }
    let bytes = backend.get(key)?;
    let mut why = Vec::new();
    if ChunkId::of(&bytes) != id {
        why.push("contents do not match its name".to_string());
    }
    let entries = match pack::decode_pack(crypto, &bytes, key) {
        Ok(e) => e,
        Err(e) => {
            why.push(format!("header: {e}"));
            indexed.cloned().unwrap_or_default()
        }
    };
    let (mut readable, mut unreadable) = (Vec::new(), Vec::new());
    for e in entries {
        let ok = pack::check_entry(&e, key)
            .and_then(|()| pack::blob_bytes(&bytes, &e, key))
            .and_then(|stored| crypto.decode_blob(&e.id, stored, e.raw_len as usize));
        match ok {
            Ok(_) => readable.push(e),
            Err(err) => {
                if unreadable.is_empty() {
                    why.push(format!("blob {}: {err}", e.id));
                }
                unreadable.push(e.id);
            }
        }
    }
    if why.is_empty() {
        Ok(PackState::Good(readable))
    } else {
        if unreadable.len() > 1 {
            why.push(format!("{} blobs unreadable in all", unreadable.len()));
        }
        Ok(PackState::Damaged {
            why: why.join("; "),
            readable,
            unreadable,
        })
    }
}

type Archives = (Vec<(ChunkId, Manifest)>, Vec<(String, String)>);

/// Readable archives, and the keys of those that cannot be decoded with why.
fn read_archives(backend: &dyn Backend, crypto: &Crypto) -> Result<Archives> {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for key in backend.list("archives")? {
        if key.ends_with(SET_ASIDE) {
            continue;
        }
        let Some(id) = key.rsplit('/').next().and_then(ChunkId::from_hex) else {
            continue;
        };
        match backend
            .get(&key)
            .and_then(|b| Manifest::decode(crypto, &b, &key))
        {
            Ok(m) => good.push((id, m)),
            Err(e) if e.is_corruption() => bad.push((key, e.to_string())),
            Err(e) => return Err(e),
        }
    }
    Ok((good, bad))
}

/// Reads an archive's items against the repaired index; returns what it found and every
/// blob it references that is lost.
fn scan_archive(source: &BlobSource, m: &Manifest) -> (ArchiveScan, HashSet<ChunkId>) {
    let mut scan = ArchiveScan {
        recorded: recorded(m),
        ..Default::default()
    };
    let mut missing: HashSet<ChunkId> = m
        .item_stream
        .iter()
        .filter(|b| !source.index.contains(b))
        .copied()
        .collect();
    let items = ItemStreamReader::new(m.item_stream.clone(), |id| source.read_blob(id))
        .expect_items(m.stats.items);
    for item in items {
        match item {
            Ok(item) => {
                scan.items_read += 1;
                let lost: Vec<ChunkId> = item
                    .chunks
                    .iter()
                    .map(|c| c.id)
                    .filter(|id| !source.index.contains(id))
                    .collect();
                if !lost.is_empty() {
                    scan.damaged.push(crate::item::display_path(&item.path));
                    missing.extend(lost);
                }
            }
            Err(e) => {
                scan.stream_error = Some(e.to_string());
                break;
            }
        }
    }
    (scan, missing)
}

fn repaired_meta(m: &Manifest) -> Option<&serde_json::Map<String, serde_json::Value>> {
    m.metadata.get("repaired")?.as_object()
}

/// What an earlier repair recorded as damaged in an archive.
pub struct RecordedDamage {
    count: u64,
    listed: HashSet<String>,
}

impl RecordedDamage {
    /// Whether `path` (as `display_path` spells it) is one of the recorded damaged files.
    /// Beyond `MAX_LISTED` only the count is recorded, so then any path is taken as covered.
    pub fn covers(&self, path: &str) -> bool {
        self.listed.contains(path) || self.count > self.listed.len() as u64
    }
}

pub fn recorded_damage(m: &Manifest) -> Option<RecordedDamage> {
    let (count, files) = recorded(m)?;
    Some(RecordedDamage {
        count,
        listed: files.into_iter().collect(),
    })
}

fn recorded(m: &Manifest) -> Option<(u64, Vec<String>)> {
    let r = repaired_meta(m)?;
    let count = r.get("damaged_count")?.as_u64()?;
    let files = r
        .get("damaged_files")?
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    Some((count, files))
}

fn replaces(m: &Manifest) -> Option<ChunkId> {
    ChunkId::from_hex(repaired_meta(m)?.get("replaces")?.as_str()?)
}

fn describe(
    id: &ChunkId,
    m: &Manifest,
    scan: &ArchiveScan,
    action: &ArchiveAction,
) -> ArchiveRepair {
    let lost_items = match action {
        ArchiveAction::Rewrite {
            rebuild_stream: true,
        } => m.stats.items.saturating_sub(scan.items_read),
        _ => 0,
    };
    let action = match action {
        ArchiveAction::Keep => "kept".to_string(),
        ArchiveAction::DeleteReplaced(by) => format!("deleted (replaced by {by})"),
        ArchiveAction::Rewrite {
            rebuild_stream: true,
        } => "rebuilt".to_string(),
        ArchiveAction::Rewrite { .. } if scan.damaged.is_empty() => "healed".to_string(),
        ArchiveAction::Rewrite { .. } => "rewritten".to_string(),
    };
    ArchiveRepair {
        name: m.name.clone(),
        id: id.to_hex(),
        action,
        damaged_files: scan.damaged.clone(),
        damaged_count: scan.damaged.len() as u64,
        lost_items,
        problem: scan.stream_error.clone(),
    }
}

/// Copies the salvaged blobs, as stored and verified once more, into new packs.
fn salvage(
    backend: &dyn Backend,
    crypto: &Crypto,
    by_pack: &BTreeMap<ChunkId, Vec<pack::PackEntry>>,
    written: &mut Vec<String>,
) -> Result<Vec<IndexedPack>> {
    let mut builders: HashMap<BlobKind, PackBuilder> = HashMap::new();
    let mut out = Vec::new();
    let mut flush = |b: PackBuilder, out: &mut Vec<IndexedPack>| -> Result<()> {
        let (id, bytes, blobs) = b.finish(crypto)?;
        let key = pack_key(&id);
        backend.put(&key, &bytes)?;
        written.push(key);
        out.push(IndexedPack { pack: id, blobs });
        Ok(())
    };
    for (pack, entries) in by_pack {
        let key = pack_key(pack);
        let bytes = backend.get(&key)?;
        for e in entries {
            let stored = pack::blob_bytes(&bytes, e, &key)?;
            crypto.decode_blob(&e.id, stored, e.raw_len as usize)?;
            let b = builders.entry(e.kind).or_default();
            b.add(e.id, e.kind, stored, e.raw_len);
            if b.len() >= TARGET_SIZE {
                let full = std::mem::take(b);
                flush(full, &mut out)?;
            }
        }
    }
    for (_, b) in builders {
        if !b.is_empty() {
            flush(b, &mut out)?;
        }
    }
    Ok(out)
}

/// Moves an object aside: a copy under `<key>.bad` first, then the original is deleted.
fn set_aside(backend: &dyn Backend, key: &str) -> Result<()> {
    let bytes = match backend.get(key) {
        Ok(b) => b,
        Err(RepoError::NotFound(_)) => return Ok(()), // moved by an interrupted repair
        Err(e) => return Err(e),
    };
    let aside = format!("{key}{SET_ASIDE}");
    if !backend.put(&aside, &bytes)? && backend.get(&aside)? != bytes {
        return Err(RepoError::Exists(format!(
            "{aside} (with other contents; move it away by hand)"
        )));
    }
    delete_if_there(backend, key)
}

fn delete_if_there(backend: &dyn Backend, key: &str) -> Result<()> {
    match backend.delete(key) {
        Ok(()) | Err(RepoError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the repaired manifest (and item stream) of one archive; returns its id.
fn rewrite_archive(
    repo: &Repository,
    id: &ChunkId,
    m: &Manifest,
    scan: &ArchiveScan,
    rebuild_stream: bool,
) -> Result<ChunkId> {
    let mut new = m.clone();
    // A later revision of the same backup: readers that meet both files (a repair stopped
    // before its deletes) take this one; notes and protection carry over with the clone.
    new.revision = m.revision.saturating_add(1);
    let mut lost_items = repaired_meta(m)
        .and_then(|r| r.get("lost_items")?.as_u64())
        .unwrap_or(0);
    if rebuild_stream {
        let source = repo.blob_source();
        let mut writer = repo.writer(None);
        let mut stream = ItemStreamWriter::new(repo.metadata_chunker());
        let mut put = |b: Vec<u8>| writer.put(BlobKind::Meta, b).map(|r| r.id);
        let items = ItemStreamReader::new(m.item_stream.clone(), |b| source.read_blob(b));
        for item in items {
            let Ok(item) = item else { break };
            stream.push(&item, &mut put)?;
        }
        let (blobs, count) = stream.finish(&mut put)?;
        writer.finish()?;
        lost_items += m.stats.items.saturating_sub(count);
        new.item_stream = blobs;
        new.stats.items = count;
    }
    new.metadata.insert(
        "repaired".into(),
        serde_json::json!({
            "time": jiff::Timestamp::now().to_string(),
            "tool_version": env!("CARGO_PKG_VERSION"),
            "replaces": id.to_hex(),
            "damaged_count": scan.damaged.len() as u64,
            "damaged_files": plan::listed(&scan.damaged),
            "lost_items": lost_items,
        }),
    );
    repo.write_archive(&new)
}
