//! The decisions of `check --repair`, as pure functions of what the scan found: which packs
//! the rebuilt index names, which blobs of damaged packs are salvaged, which are lost, and
//! what happens to each archive. No I/O here; `repair::run` reads, calls these, then writes.
//!
//! Invariants the tests below hold these functions to:
//! - a blob that any pack still holds readably is never lost: a good pack's copy is indexed,
//!   else a readable copy in a damaged pack is salvaged;
//! - the rebuilt index names exactly the good packs (whatever the index files said), so it
//!   never names a missing or damaged pack and never forgets an unindexed good one;
//! - an archive is rewritten only when what it records differs from what is now true, so a
//!   second repair after a finished one does nothing.

use crate::repo::id::ChunkId;
use crate::repo::pack::PackEntry;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// One pack file as a full read found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackState {
    /// Its id matches its bytes, its header decodes and every blob verifies.
    Good(Vec<PackEntry>),
    /// Anything else. `readable` are the blobs that still verify (located through the
    /// header if it decodes, else through what the index files said of this pack);
    /// `unreadable` the ids of the others.
    Damaged {
        why: String,
        readable: Vec<PackEntry>,
        unreadable: Vec<ChunkId>,
    },
}

/// What the index files say now.
#[derive(Clone, Debug, Default)]
pub struct CurrentIndex {
    /// Pack -> entries, from the index files in effect (not superseded).
    pub packs: BTreeMap<ChunkId, Vec<PackEntry>>,
    /// Index files that could not be read or decoded.
    pub damaged_files: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexPlan {
    /// Good packs and their entries (from their headers): what the new index names.
    pub keep: BTreeMap<ChunkId, Vec<PackEntry>>,
    /// Readable blobs of damaged packs that no good pack holds: (damaged pack, entry), each
    /// blob once. They are copied into new packs before the damaged pack is moved aside.
    pub salvage: Vec<(ChunkId, PackEntry)>,
    /// Damaged packs, each with why: moved aside as `<key>.bad`.
    pub set_aside: Vec<(ChunkId, String)>,
    /// Packs the index files name that do not exist.
    pub missing: Vec<ChunkId>,
    /// Good packs no index file named (left by an interrupted backup, or index files lost).
    pub unindexed: Vec<ChunkId>,
    /// Blobs no readable copy of which is left, with the pack they were in.
    pub lost: BTreeMap<ChunkId, ChunkId>,
    /// Whether a new index file must replace the current ones.
    pub rewrite_index: bool,
}

pub fn plan_index(scans: &BTreeMap<ChunkId, PackState>, current: &CurrentIndex) -> IndexPlan {
    let mut plan = IndexPlan::default();
    for (id, state) in scans {
        if let PackState::Good(entries) = state {
            plan.keep.insert(*id, entries.clone());
            if !current.packs.contains_key(id) {
                plan.unindexed.push(*id);
            }
        }
    }
    let held: HashSet<ChunkId> = plan.keep.values().flatten().map(|e| e.id).collect();
    let mut salvaged: HashSet<ChunkId> = HashSet::new();
    for (id, state) in scans {
        let PackState::Damaged {
            why,
            readable,
            unreadable,
        } = state
        else {
            continue;
        };
        plan.set_aside.push((*id, why.clone()));
        for e in readable {
            if !held.contains(&e.id) && salvaged.insert(e.id) {
                plan.salvage.push((*id, *e));
            }
        }
        for b in unreadable {
            if !held.contains(b) {
                plan.lost.entry(*b).or_insert(*id);
            }
        }
    }
    for (pack, entries) in &current.packs {
        if scans.contains_key(pack) {
            continue;
        }
        plan.missing.push(*pack);
        for e in entries {
            if !held.contains(&e.id) {
                plan.lost.entry(e.id).or_insert(*pack);
            }
        }
    }
    // A blob found readable somewhere is not lost, whichever damaged pack lost a copy.
    plan.lost.retain(|b, _| !salvaged.contains(b));
    plan.rewrite_index = current.damaged_files > 0
        || !plan.set_aside.is_empty()
        || !plan.missing.is_empty()
        || !plan.unindexed.is_empty()
        || plan.keep.iter().any(|(id, entries)| {
            current
                .packs
                .get(id)
                .is_none_or(|listed| !same_entries(entries, listed))
        });
    plan
}

fn same_entries(a: &[PackEntry], b: &[PackEntry]) -> bool {
    let sorted = |v: &[PackEntry]| {
        let mut v = v.to_vec();
        v.sort_by_key(|e| (e.offset, e.id));
        v
    };
    sorted(a) == sorted(b)
}

/// Damaged paths an archive's metadata records by name; beyond that only the count.
pub const MAX_LISTED: usize = 1000;

/// What one readable archive looks like against the repaired index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveScan {
    pub items_read: u64,
    /// Why its item stream stopped early (a metadata blob lost, or undecodable).
    pub stream_error: Option<String>,
    /// Files with at least one content blob that no readable copy is left of, in stream order.
    pub damaged: Vec<String>,
    /// What its manifest records from an earlier repair: damaged count and listed paths.
    pub recorded: Option<(u64, Vec<String>)>,
    /// The archive an earlier repair wrote in place of this one, if it exists (the repair
    /// was interrupted between writing it and deleting this one).
    pub replaced_by: Option<ChunkId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveAction {
    Keep,
    /// Its replacement exists already: delete this one (finishing an interrupted repair).
    DeleteReplaced(ChunkId),
    /// Write a new manifest (and, with `rebuild_stream`, a new item stream of the items that
    /// could be read), then delete this one.
    Rewrite {
        rebuild_stream: bool,
    },
}

pub fn plan_archive(scan: &ArchiveScan) -> ArchiveAction {
    if let Some(successor) = scan.replaced_by {
        return ArchiveAction::DeleteReplaced(successor);
    }
    if scan.stream_error.is_some() {
        return ArchiveAction::Rewrite {
            rebuild_stream: true,
        };
    }
    let now = (scan.damaged.len() as u64, listed(&scan.damaged));
    let recorded = scan.recorded.clone().unwrap_or_default();
    if now == recorded {
        ArchiveAction::Keep
    } else {
        // Newly damaged, or healed since (a later backup wrote the lost blobs again).
        ArchiveAction::Rewrite {
            rebuild_stream: false,
        }
    }
}

/// The first `MAX_LISTED` damaged paths, as a manifest records them.
pub fn listed(damaged: &[String]) -> Vec<String> {
    damaged.iter().take(MAX_LISTED).cloned().collect()
}

/// For the report: per set-aside or missing pack, the archives that used its lost blobs.
pub fn users_of_lost_packs<'a>(
    lost: &BTreeMap<ChunkId, ChunkId>,
    uses: impl IntoIterator<Item = (&'a str, &'a ChunkId)>,
) -> BTreeMap<ChunkId, BTreeSet<String>> {
    let mut out: BTreeMap<ChunkId, BTreeSet<String>> = BTreeMap::new();
    for (archive, blob) in uses {
        if let Some(pack) = lost.get(blob) {
            out.entry(*pack).or_default().insert(archive.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::BlobKind;

    fn e(id: u8, off: u32) -> PackEntry {
        PackEntry {
            id: ChunkId([id; 32]),
            kind: BlobKind::Data,
            offset: off,
            length: 1,
            raw_len: 1,
        }
    }
    fn p(n: u8) -> ChunkId {
        ChunkId([100 + n; 32])
    }

    #[test]
    fn a_healthy_repository_needs_nothing() {
        let scans = BTreeMap::from([(p(1), PackState::Good(vec![e(1, 0), e(2, 1)]))]);
        let current = CurrentIndex {
            packs: BTreeMap::from([(p(1), vec![e(2, 1), e(1, 0)])]),
            damaged_files: 0,
        };
        let plan = plan_index(&scans, &current);
        assert!(!plan.rewrite_index);
        assert!(plan.lost.is_empty() && plan.salvage.is_empty() && plan.set_aside.is_empty());
    }

    #[test]
    fn lost_index_files_are_rebuilt_from_every_good_pack() {
        let scans = BTreeMap::from([
            (p(1), PackState::Good(vec![e(1, 0)])),
            (p(2), PackState::Good(vec![e(2, 0)])),
        ]);
        let plan = plan_index(&scans, &CurrentIndex::default());
        assert!(plan.rewrite_index);
        assert_eq!(plan.unindexed, vec![p(1), p(2)]);
        assert_eq!(plan.keep.len(), 2);
        // A damaged index file alone (everything else agrees) also means a rewrite.
        let current = CurrentIndex {
            packs: BTreeMap::from([(p(1), vec![e(1, 0)]), (p(2), vec![e(2, 0)])]),
            damaged_files: 1,
        };
        assert!(plan_index(&scans, &current).rewrite_index);
        // So does an index that disagrees with a header: the header wins.
        let current = CurrentIndex {
            packs: BTreeMap::from([(p(1), vec![e(1, 5)]), (p(2), vec![e(2, 0)])]),
            damaged_files: 0,
        };
        let plan = plan_index(&scans, &current);
        assert!(plan.rewrite_index);
        assert_eq!(plan.keep[&p(1)], vec![e(1, 0)]);
    }

    #[test]
    fn readable_blobs_of_a_damaged_pack_are_salvaged_once_and_never_lost() {
        let scans = BTreeMap::from([
            (p(1), PackState::Good(vec![e(1, 0)])),
            (
                p(2),
                PackState::Damaged {
                    why: "blob 3 fails".into(),
                    readable: vec![e(1, 0), e(2, 1)],
                    unreadable: vec![ChunkId([3; 32]), ChunkId([4; 32])],
                },
            ),
            (
                p(3),
                PackState::Damaged {
                    why: "header".into(),
                    // Blob 4 is unreadable in pack 2 but readable here: not lost.
                    readable: vec![e(2, 0), e(4, 1)],
                    unreadable: vec![],
                },
            ),
        ]);
        let current = CurrentIndex {
            packs: BTreeMap::from([(p(1), vec![e(1, 0)]), (p(2), vec![]), (p(3), vec![])]),
            damaged_files: 0,
        };
        let plan = plan_index(&scans, &current);
        assert!(plan.rewrite_index);
        assert_eq!(
            plan.salvage,
            vec![(p(2), e(2, 1)), (p(3), e(4, 1))],
            "blob 1 is in a good pack; blob 2 is salvaged once"
        );
        assert_eq!(plan.lost, BTreeMap::from([(ChunkId([3; 32]), p(2))]));
        assert_eq!(
            plan.set_aside.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![p(2), p(3)]
        );
        assert_eq!(plan.keep.keys().copied().collect::<Vec<_>>(), vec![p(1)]);
    }

    #[test]
    fn blobs_of_a_missing_pack_are_lost_unless_held_elsewhere() {
        let scans = BTreeMap::from([(p(1), PackState::Good(vec![e(1, 0)]))]);
        let current = CurrentIndex {
            packs: BTreeMap::from([(p(1), vec![e(1, 0)]), (p(9), vec![e(1, 0), e(7, 1)])]),
            damaged_files: 0,
        };
        let plan = plan_index(&scans, &current);
        assert_eq!(plan.missing, vec![p(9)]);
        assert_eq!(plan.lost, BTreeMap::from([(ChunkId([7; 32]), p(9))]));
        assert!(plan.rewrite_index);
    }

    #[test]
    fn archives_are_rewritten_only_when_their_record_is_stale() {
        let mut scan = ArchiveScan {
            items_read: 3,
            damaged: vec!["./a".into()],
            ..Default::default()
        };
        assert_eq!(
            plan_archive(&scan),
            ArchiveAction::Rewrite {
                rebuild_stream: false
            }
        );
        scan.recorded = Some((1, vec!["./a".into()]));
        assert_eq!(plan_archive(&scan), ArchiveAction::Keep, "already repaired");
        scan.damaged.clear();
        assert_eq!(
            plan_archive(&scan),
            ArchiveAction::Rewrite {
                rebuild_stream: false
            },
            "healed: the mark is taken off"
        );
        scan.recorded = None;
        assert_eq!(plan_archive(&scan), ArchiveAction::Keep, "healthy");
        scan.stream_error = Some("blob x missing".into());
        assert_eq!(
            plan_archive(&scan),
            ArchiveAction::Rewrite {
                rebuild_stream: true
            }
        );
        scan.replaced_by = Some(p(1));
        assert_eq!(plan_archive(&scan), ArchiveAction::DeleteReplaced(p(1)));
    }

    #[test]
    fn many_damaged_paths_are_counted_and_listed_up_to_the_limit() {
        let damaged: Vec<String> = (0..MAX_LISTED + 5).map(|i| format!("./f{i}")).collect();
        let scan = ArchiveScan {
            recorded: Some((damaged.len() as u64, listed(&damaged))),
            damaged,
            ..Default::default()
        };
        assert_eq!(plan_archive(&scan), ArchiveAction::Keep);
        assert_eq!(scan.recorded.unwrap().1.len(), MAX_LISTED);
    }

    #[test]
    fn lost_blobs_are_traced_to_their_pack_and_archives() {
        let lost = BTreeMap::from([(ChunkId([3; 32]), p(2))]);
        let b3 = ChunkId([3; 32]);
        let b1 = ChunkId([1; 32]);
        let users = users_of_lost_packs(&lost, [("a", &b3), ("b", &b1), ("c", &b3)]);
        assert_eq!(
            users,
            BTreeMap::from([(p(2), BTreeSet::from(["a".to_string(), "c".to_string()]))])
        );
    }
}
