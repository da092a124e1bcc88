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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::test_support::unencrypted;
    use crate::retention::Rules;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Pruned(Mutex<Vec<String>>);

    impl Sink for Pruned {
        fn event(&self, event: Event<'_>) {
            if let Event::Pruned { archive } = event {
                self.0.lock().unwrap().push(archive.to_string());
            }
        }
    }

    fn manifest(name: &str, day: u32) -> Manifest {
        let start = format!("2026-01-{day:02}T00:00:00Z");
        Manifest {
            name: name.into(),
            start: start.clone(),
            end: start,
            hostname: String::new(),
            tool_version: String::new(),
            metadata: [("series".to_string(), serde_json::json!("lxc-100"))].into(),
            item_stream: Vec::new(),
            stats: Default::default(),
            notes: String::new(),
            protected: false,
            revision: 0,
        }
    }

    #[test]
    fn prune_after_a_backup_keeps_protected_archives_out_of_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let repo = unencrypted(dir.path());
        for (name, day) in [("ct-1", 1), ("ct-2", 2), ("ct-3", 3)] {
            repo.write_archive(&manifest(name, day)).unwrap();
        }
        repo.update_archive("ct-1", |m| m.protected = true).unwrap();
        let options = PruneOptions {
            rules: Rules {
                last: Some(1),
                ..Default::default()
            },
            on_warnings: false,
        };
        let sink = Pruned::default();
        after_backup(&repo, &manifest("ct-3", 3), 0, &options, &sink).unwrap();
        assert_eq!(*sink.0.lock().unwrap(), ["ct-2"]);
        let left: Vec<_> = repo.archives().unwrap().0;
        let left: Vec<_> = left.iter().map(|(_, m)| m.name.as_str()).collect();
        assert_eq!(left, ["ct-1", "ct-3"]);
    }
}
