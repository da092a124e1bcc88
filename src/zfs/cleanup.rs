//! Choosing what `proxborg cleanup` may destroy: datasets and snapshots on which proxborg set
//! its `proxborg:run` user property *locally* (user properties inherit to snapshots and child
//! datasets, so an inherited value proves nothing) *and* that carry proxborg's name prefix,
//! from runs other than the ones still alive. Input is parsed `zfs get -H -p -o
//! name,property,value,source -r proxborg:run <pool>` output; output is in a safe destruction
//! order (clones before the snapshots they come from).

use super::argv::{Destroyable, CLONE_PREFIX, RUN_PROPERTY, SNAPSHOT_PREFIX};
use super::names::{DatasetName, SnapshotName};
use super::parse::SourcedRow;

/// One leftover and the run that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub target: Destroyable,
    pub run: String,
}

/// `zfs get -H -p -o name,property,value,source proxborg:run -r <pool>` (`-r` lists snapshots
/// too, on OpenZFS and zfs-fuse alike).
pub fn leftovers_argv(pool: &DatasetName) -> Vec<String> {
    [
        "zfs",
        "get",
        "-H",
        "-p",
        "-o",
        "name,property,value,source",
        "-r",
        RUN_PROPERTY,
        pool.as_str(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Leftovers of runs not in `alive`: clones first, then snapshots. Anything with the property
/// but without the prefix is ignored, so a user copying the property cannot get a dataset
/// destroyed.
pub fn leftovers(rows: &[SourcedRow], alive: &[&str]) -> Vec<Leftover> {
    let mut clones = Vec::new();
    let mut snaps = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.property == RUN_PROPERTY && r.is_local())
    {
        let Some(run) = r.value.as_deref() else {
            continue;
        };
        if alive.contains(&run) {
            continue;
        }
        let run = run.to_string();
        if r.name.contains('@') {
            if let Ok(s) = SnapshotName::new(&r.name) {
                if s.snap().starts_with(SNAPSHOT_PREFIX) {
                    snaps.push(Leftover {
                        target: Destroyable::Snapshot(s),
                        run,
                    });
                }
            }
        } else if let Ok(d) = DatasetName::new(&r.name) {
            if d.leaf().starts_with(CLONE_PREFIX) && d.parent().is_some() {
                clones.push(Leftover {
                    target: Destroyable::Clone(d),
                    run,
                });
            }
        }
    }
    clones.extend(snaps);
    clones
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zfs::parse::parse_get_sourced;

    fn describe(l: &[Leftover]) -> Vec<String> {
        l.iter()
            .map(|l| match &l.target {
                Destroyable::Clone(d) => format!("clone {d} ({})", l.run),
                Destroyable::Snapshot(s) => format!("snap {s} ({})", l.run),
            })
            .collect()
    }

    #[test]
    fn inherited_values_never_count() {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/zfs/zfs-fuse-get-source.txt"
        );
        let rows = parse_get_sourced(&std::fs::read_to_string(p).unwrap()).unwrap();
        assert_eq!(rows[2].source.as_deref(), Some("inherited from pvefix2/ds"));
        assert_eq!(rows[0].value, None);
        // ds@proxborg-x only inherits `abc` from ds; ds itself has no prefix.
        assert_eq!(
            describe(&leftovers(&rows, &[])),
            ["snap pvefix2/ds@proxborg-y (own)"]
        );
        assert!(
            leftovers(&rows, &["own"]).is_empty(),
            "a live run's objects stay"
        );
    }

    #[test]
    fn clones_first_and_all_pass_the_destroy_guard() {
        let text = "rpool/data/subvol-1-disk-0@proxborg-a\tproxborg:run\tr1\tlocal\n\
                    rpool/data/proxborg-clone-a\tproxborg:run\tr1\tlocal\n\
                    rpool/data/mine\tproxborg:run\tr1\tlocal\n\
                    rpool/data/mine@keep\tproxborg:run\tr1\tlocal\n";
        let l = leftovers(&parse_get_sourced(text).unwrap(), &["r2"]);
        assert_eq!(
            describe(&l),
            [
                "clone rpool/data/proxborg-clone-a (r1)",
                "snap rpool/data/subvol-1-disk-0@proxborg-a (r1)"
            ]
        );
        for l in &l {
            crate::zfs::destroy_argv(&l.target).expect("every leftover passes the destroy guard");
        }
        assert!(parse_get_sourced("a\tb\tc\n").is_err());
    }

    #[test]
    fn argv() {
        assert_eq!(
            leftovers_argv(&DatasetName::new("rpool").unwrap()),
            [
                "zfs",
                "get",
                "-H",
                "-p",
                "-o",
                "name,property,value,source",
                "-r",
                "proxborg:run",
                "rpool"
            ]
        );
    }
}
