//! `proxborg sync SRC DST`: copy archives from one repository to another with exactly the
//! blobs the destination lacks (PBS sync jobs, borg 2 `transfer`). Works through the
//! `Repository` API only, so every backend behaves the same.
//!
//! Rules:
//! - The two repositories must give the same data the same blob ids (`Repository::same_ids_as`:
//!   `init --chunker-params-from SRC`, or both unencrypted with the same chunker parameters).
//!   Otherwise nothing is copied: item streams name content by id, and rewriting them is a
//!   re-chunking this does not do.
//! - Each blob is read from the source verified (decrypted, its id checked) and stored again
//!   through the destination's writer (its compression and key); its id is recomputed there
//!   and must match.
//! - An archive's manifest (notes, protection, revision included) is written to the
//!   destination only after the writer flushed and settled every pack and index file, the
//!   destination's index was read again, and every blob the archive references is in it. A
//!   crash leaves packs no archive names (garbage for compact), never a dangling reference.
//! - The caller holds a shared lock on the destination (as `create` does); the source is only
//!   read. A compact running on the source meanwhile can make a read fail: the archive being
//!   copied is then not written, and the error says which blob.

pub mod plan;

use crate::item::Item;
use crate::repo::item_stream::ItemStreamReader;
use crate::repo::reader::Prefetcher;
use crate::repo::{BlobKind, ChunkId, Manifest, RepoError, Repository};
pub use plan::{ArchivePlan, Selection};
use std::collections::{HashSet, VecDeque};

/// Blobs read ahead from the source.
const IN_FLIGHT: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub archives_copied: u64,
    pub archives_skipped: u64,
    pub blobs_copied: u64,
    /// Plain bytes of the blobs copied.
    pub bytes_copied: u64,
    /// Bytes of the blobs as stored in the destination (compressed, encrypted); 0 in a dry run.
    pub bytes_stored: u64,
    pub dry_run: bool,
}

/// What `sync` tells its caller as it goes.
pub enum Event<'a> {
    /// An archive copied (or, in a dry run, that would be).
    Copied {
        name: &'a str,
        blobs: u64,
        bytes: u64,
    },
    Skipped {
        name: &'a str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync: SRC and DST chunk ids differ; make DST with `proxborg init --chunker-params-from SRC`")]
    IdsDiffer,
    #[error("{0}")]
    Select(String),
    #[error("archive {archive:?}: {source}")]
    Archive {
        archive: String,
        #[source]
        source: RepoError,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Refuses two repositories whose blob ids differ.
pub fn check_compatible(src: &Repository, dst: &Repository) -> Result<(), SyncError> {
    if src.same_ids_as(dst) {
        Ok(())
    } else {
        Err(SyncError::IdsDiffer)
    }
}

/// Copies the archives of `plan` (from `plan::choose`). `dst`'s index is reloaded after each
/// archive; with `dry_run` nothing is written and the report says what would be copied.
pub fn run(
    src: &Repository,
    dst: &mut Repository,
    plan: &ArchivePlan,
    dry_run: bool,
    on: &mut dyn FnMut(Event),
) -> Result<SyncReport, SyncError> {
    check_compatible(src, dst)?;
    let mut report = SyncReport {
        archives_skipped: plan.skip.len() as u64,
        dry_run,
        ..Default::default()
    };
    for name in &plan.skip {
        on(Event::Skipped { name });
    }
    let mut planned = HashSet::new();
    for (_, manifest) in &plan.copy {
        let wrap = |source| SyncError::Archive {
            archive: manifest.name.clone(),
            source,
        };
        let refs = references(src, manifest).map_err(wrap)?;
        let index = dst.index().clone();
        let missing =
            plan::missing_blobs(refs.iter().copied(), |id| index.contains(id), &mut planned);
        let bytes: u64 = missing
            .iter()
            .filter_map(|(id, _)| src.index().get(id))
            .map(|(_, loc)| u64::from(loc.raw_len))
            .sum();
        if !dry_run {
            report.bytes_stored += copy_blobs(src, dst, &missing).map_err(wrap)?;
            dst.reload_index().map_err(wrap)?;
            if let Some((id, _)) = refs.iter().find(|(id, _)| !dst.index().contains(id)) {
                return Err(wrap(RepoError::corrupt(
                    format!("blob {id}"),
                    "stored in the destination but not in its index afterwards; archive not written",
                )));
            }
            dst.write_archive(manifest).map_err(wrap)?;
        }
        report.archives_copied += 1;
        report.blobs_copied += missing.len() as u64;
        report.bytes_copied += bytes;
        on(Event::Copied {
            name: &manifest.name,
            blobs: missing.len() as u64,
            bytes,
        });
    }
    Ok(report)
}

/// Every blob an archive references: its item stream's (metadata) blobs, then each item's
/// content blobs, in order, with repeats.
fn references(
    src: &Repository,
    manifest: &Manifest,
) -> Result<Vec<(ChunkId, BlobKind)>, RepoError> {
    let source = src.blob_source();
    let mut refs: Vec<(ChunkId, BlobKind)> = manifest
        .item_stream
        .iter()
        .map(|id| (*id, BlobKind::Meta))
        .collect();
    let items = ItemStreamReader::new(manifest.item_stream.clone(), |id| source.read_blob(id))
        .expect_items(manifest.stats.items);
    for item in items {
        let item: Item = item?;
        refs.extend(item.chunks.iter().map(|c| (c.id, BlobKind::Data)));
    }
    Ok(refs)
}

/// Reads `blobs` from `src` (verified, read ahead on worker threads) and stores them through a
/// writer of `dst`; returns the bytes stored once every pack and index file is settled.
fn copy_blobs(
    src: &Repository,
    dst: &Repository,
    blobs: &[(ChunkId, BlobKind)],
) -> Result<u64, RepoError> {
    let mut writer = dst.writer(None);
    let prefetch = Prefetcher::new(src.blob_source(), 2, IN_FLIGHT);
    let mut pending = VecDeque::new();
    let mut queue = blobs.iter();
    loop {
        while pending.len() < IN_FLIGHT {
            let Some(&(id, kind)) = queue.next() else {
                break;
            };
            let blob = prefetch
                .request(id)
                .ok_or_else(|| RepoError::Worker("the blob reader stopped".into()))?;
            pending.push_back((id, kind, blob));
        }
        let Some((id, kind, blob)) = pending.pop_front() else {
            break;
        };
        let data = blob.wait()?;
        let stored = writer.put(kind, data)?;
        if stored.id != id {
            return Err(RepoError::corrupt(
                format!("blob {id}"),
                "has another id in the destination (its id key changed while syncing?)",
            ));
        }
    }
    Ok(writer.finish()?.stored_bytes)
}
