//! `--prune`: after a successful backup, the same retention decisions as `proxborg prune`,
//! applied to that archive's series alone. Protected archives are kept (`retention`); a
//! protected archive rolled back by the storage (`trust`) stops the prune with an error.

use super::{BackupError, Event, PruneOptions, Sink};
use crate::repo::{Manifest, Repository};
use crate::retention::{decide_archives, series_key};

pub(super) fn after_backup(
    repo: &Repository,
    stored: &Manifest,
    warnings: u64,
    options: &PruneOptions,
    sink: &dyn Sink,
) -> Result<(), BackupError> {
    if warnings > 0 && !options.on_warnings {
        sink.event(Event::Warning {
            archive: Some(&stored.name),
            message: "not pruning after a backup with warnings (--prune-on-warnings)",
        });
        return Ok(());
    }
    let list = repo.list_archives()?;
    if let Some(msg) = list.rolled_back.values().next() {
        return Err(crate::repo::RepoError::Changed(format!("{msg}; not pruning")).into());
    }
    let archives = &list.archives;
    let series = series_key(&stored.name, &stored.metadata);
    let members: Vec<_> = archives
        .iter()
        .filter(|(_, m)| series_key(&m.name, &m.metadata) == series)
        .collect();
    if !members.iter().any(|(_, m)| m.name == stored.name) {
        return Ok(());
    }
    let decisions = decide_archives(
        &members,
        &options.rules,
        true,
        jiff::Timestamp::now(),
        &jiff::tz::TimeZone::system(),
    )?;
    for (entry, d) in members.iter().zip(decisions) {
        if !d.keep {
            repo.delete_archive(entry, &list)?;
            sink.event(Event::Pruned {
                archive: &entry.1.name,
            });
        }
    }
    Ok(())
}
