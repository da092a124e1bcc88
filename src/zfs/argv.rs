//! Argv builders for the `zfs` commands proxborg runs. Each returns the full argv, `zfs`
//! first, built only from validated names, so nothing a config file says can smuggle an option
//! in. Destruction is limited to names carrying proxborg's prefixes.

use super::names::{DatasetName, SnapshotName};
use super::ZfsError;

/// Snapshot part of every snapshot proxborg takes: `proxborg-<UTC timestamp>`.
pub const SNAPSHOT_PREFIX: &str = "proxborg-";
/// Last component of every clone proxborg makes: `proxborg-clone-<...>`.
pub const CLONE_PREFIX: &str = "proxborg-clone-";
/// User property set on everything proxborg creates, valued with the run id.
pub const RUN_PROPERTY: &str = "proxborg:run";

/// A ZFS user property name (`module:name`): lower-case letters, digits and `:._-`, with a
/// colon, at most 256 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserProperty(String);

impl UserProperty {
    pub fn new(name: &str) -> Result<UserProperty, ZfsError> {
        let bad = |reason: &str| ZfsError::InvalidProperty {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        if !name.contains(':') {
            return Err(bad("a user property needs a ':'"));
        }
        if name.len() > 256 {
            return Err(bad("longer than 256 bytes"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":._-".contains(&b))
        {
            return Err(bad("only a-z, 0-9 and ':._-' are allowed"));
        }
        if name.starts_with(|c: char| !c.is_ascii_lowercase()) {
            return Err(bad("must begin with a letter"));
        }
        Ok(UserProperty(name.to_string()))
    }

    pub fn run() -> UserProperty {
        UserProperty(RUN_PROPERTY.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_value(prop: &str, value: &str) -> Result<(), ZfsError> {
    // Tabs and newlines would break the `-H` output we parse back.
    if value.len() > 8191 || value.contains(['\t', '\n', '\0']) || value.is_empty() {
        return Err(ZfsError::InvalidProperty {
            name: prop.to_string(),
            reason: format!("value '{value}' is empty, too long, or has a tab/newline"),
        });
    }
    Ok(())
}

fn s(v: &str) -> String {
    v.to_string()
}

/// `zfs list -H -o name,mountpoint,type -t filesystem,volume [-r] [names...]`.
pub fn list_argv(names: &[DatasetName], recursive: bool) -> Vec<String> {
    let mut a = vec![
        s("zfs"),
        s("list"),
        s("-H"),
        s("-o"),
        s("name,mountpoint,type"),
        s("-t"),
        s("filesystem,volume"),
    ];
    if recursive {
        a.push(s("-r"));
    }
    a.extend(names.iter().map(|n| n.to_string()));
    a
}

/// `zfs get -H -p -o name,property,value <props> <names...>`.
pub fn get_argv(props: &[&str], names: &[&str]) -> Vec<String> {
    let mut a = vec![
        s("zfs"),
        s("get"),
        s("-H"),
        s("-p"),
        s("-o"),
        s("name,property,value"),
        props.join(","),
    ];
    a.extend(names.iter().map(|n| n.to_string()));
    a
}

/// `zfs snapshot a@s b@s ...`: atomic across the datasets, which must share a pool.
pub fn snapshot_argv(snaps: &[SnapshotName]) -> Result<Vec<String>, ZfsError> {
    snapshot_with_props_argv(snaps, &[])
}

/// `zfs snapshot -o prop=value ... a@s b@s ...`.
pub fn snapshot_with_props_argv(
    snaps: &[SnapshotName],
    props: &[(UserProperty, String)],
) -> Result<Vec<String>, ZfsError> {
    let first = snaps.first().ok_or(ZfsError::NothingToSnapshot)?;
    let pool = first.dataset().pool().to_string();
    if let Some(other) = snaps.iter().find(|x| x.dataset().pool() != pool) {
        return Err(ZfsError::CrossPool {
            first: first.to_string(),
            other: other.to_string(),
        });
    }
    let mut a = vec![s("zfs"), s("snapshot")];
    for (p, v) in props {
        check_value(p.as_str(), v)?;
        a.push(s("-o"));
        a.push(format!("{}={v}", p.as_str()));
    }
    a.extend(snaps.iter().map(|n| n.to_string()));
    Ok(a)
}

/// `zfs clone -o k=v ... <snap> <target>`. `props` are native (`readonly`, `mountpoint`,
/// `canmount`) or user properties; the clone's name must carry [`CLONE_PREFIX`].
pub fn clone_argv(
    snap: &SnapshotName,
    target: &DatasetName,
    props: &[(&str, &str)],
) -> Result<Vec<String>, ZfsError> {
    if !target.leaf().starts_with(CLONE_PREFIX) {
        return Err(ZfsError::NotProxborgOwned {
            name: target.to_string(),
        });
    }
    if snap.dataset().pool() != target.pool() {
        return Err(ZfsError::CrossPool {
            first: snap.to_string(),
            other: target.to_string(),
        });
    }
    let mut a = vec![s("zfs"), s("clone")];
    for (k, v) in props {
        let native = matches!(
            *k,
            "readonly" | "mountpoint" | "canmount" | "atime" | "exec" | "setuid" | "devices"
        );
        if !native {
            UserProperty::new(k)?;
        }
        check_value(k, v)?;
        a.push(s("-o"));
        a.push(format!("{k}={v}"));
    }
    a.push(snap.to_string());
    a.push(target.to_string());
    Ok(a)
}

/// What `destroy_argv` may destroy: a proxborg snapshot or a proxborg clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destroyable {
    Snapshot(SnapshotName),
    Clone(DatasetName),
}

/// `zfs destroy <name>` (never `-r`/`-R`), only for names carrying proxborg's prefixes.
pub fn destroy_argv(target: &Destroyable) -> Result<Vec<String>, ZfsError> {
    let name = match target {
        Destroyable::Snapshot(sn) if sn.snap().starts_with(SNAPSHOT_PREFIX) => sn.to_string(),
        Destroyable::Clone(ds) if ds.leaf().starts_with(CLONE_PREFIX) && ds.parent().is_some() => {
            ds.to_string()
        }
        Destroyable::Snapshot(sn) => {
            return Err(ZfsError::NotProxborgOwned {
                name: sn.to_string(),
            })
        }
        Destroyable::Clone(ds) => {
            return Err(ZfsError::NotProxborgOwned {
                name: ds.to_string(),
            })
        }
    };
    Ok(vec![s("zfs"), s("destroy"), name])
}

/// `zfs set <prop>=<value> <dataset-or-snapshot>`.
pub fn set_user_property(
    name: &str,
    prop: &UserProperty,
    value: &str,
) -> Result<Vec<String>, ZfsError> {
    if name.contains('@') {
        SnapshotName::new(name)?;
    } else {
        DatasetName::new(name)?;
    }
    check_value(prop.as_str(), value)?;
    Ok(vec![
        s("zfs"),
        s("set"),
        format!("{}={value}", prop.as_str()),
        name.to_string(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(n: &str) -> SnapshotName {
        SnapshotName::new(n).unwrap()
    }

    #[test]
    fn snapshot_is_one_call_per_pool() {
        let a = snapshot_with_props_argv(
            &[
                snap("rpool/data/subvol-100-disk-0@proxborg-1"),
                snap("rpool/data/subvol-100-disk-1@proxborg-1"),
            ],
            &[(UserProperty::run(), "r1".into())],
        )
        .unwrap();
        assert_eq!(
            a,
            [
                "zfs",
                "snapshot",
                "-o",
                "proxborg:run=r1",
                "rpool/data/subvol-100-disk-0@proxborg-1",
                "rpool/data/subvol-100-disk-1@proxborg-1"
            ]
        );
        assert!(matches!(
            snapshot_argv(&[snap("rpool/a@x"), snap("tank/b@x")]),
            Err(ZfsError::CrossPool { .. })
        ));
        assert_eq!(snapshot_argv(&[]), Err(ZfsError::NothingToSnapshot));
    }

    #[test]
    fn clone_destroy_and_set() {
        let target = DatasetName::new("rpool/data/proxborg-clone-20261123T071900Z-0").unwrap();
        let a = clone_argv(
            &snap("rpool/data/subvol-100-disk-0@proxborg-1"),
            &target,
            &[
                ("readonly", "on"),
                ("mountpoint", "/run/proxborg/x"),
                (RUN_PROPERTY, "r1"),
            ],
        )
        .unwrap();
        assert_eq!(
            a,
            [
                "zfs",
                "clone",
                "-o",
                "readonly=on",
                "-o",
                "mountpoint=/run/proxborg/x",
                "-o",
                "proxborg:run=r1",
                "rpool/data/subvol-100-disk-0@proxborg-1",
                "rpool/data/proxborg-clone-20261123T071900Z-0"
            ]
        );
        assert!(clone_argv(
            &snap("rpool/a@proxborg-1"),
            &DatasetName::new("rpool/data/x").unwrap(),
            &[]
        )
        .is_err());
        assert!(clone_argv(
            &snap("rpool/a@proxborg-1"),
            &target,
            &[("compression", "off")]
        )
        .is_err());
        assert!(clone_argv(
            &snap("rpool/a@proxborg-1"),
            &target,
            &[("readonly", "on\n-o x")]
        )
        .is_err());

        assert_eq!(
            destroy_argv(&Destroyable::Clone(target)).unwrap(),
            [
                "zfs",
                "destroy",
                "rpool/data/proxborg-clone-20261123T071900Z-0"
            ]
        );
        assert_eq!(
            destroy_argv(&Destroyable::Snapshot(snap("rpool/a@proxborg-1"))).unwrap(),
            ["zfs", "destroy", "rpool/a@proxborg-1"]
        );
        for bad in [
            Destroyable::Snapshot(snap("rpool/a@vzdump")),
            Destroyable::Clone(DatasetName::new("rpool/data").unwrap()),
            Destroyable::Clone(DatasetName::new("proxborg-clone-x").unwrap()),
        ] {
            assert!(
                matches!(destroy_argv(&bad), Err(ZfsError::NotProxborgOwned { .. })),
                "{bad:?}"
            );
        }

        assert_eq!(
            set_user_property("rpool/a@proxborg-1", &UserProperty::run(), "r1").unwrap(),
            ["zfs", "set", "proxborg:run=r1", "rpool/a@proxborg-1"]
        );
        assert!(set_user_property("rpool/a", &UserProperty::run(), "a\tb").is_err());
        assert!(UserProperty::new("noColon").is_err());
        assert!(UserProperty::new("Proxborg:run").is_err());
        assert!(UserProperty::new("proxborg:run").is_ok());
    }

    #[test]
    fn list_and_get() {
        assert_eq!(
            list_argv(&[DatasetName::new("rpool").unwrap()], true),
            [
                "zfs",
                "list",
                "-H",
                "-o",
                "name,mountpoint,type",
                "-t",
                "filesystem,volume",
                "-r",
                "rpool"
            ]
        );
        assert_eq!(
            get_argv(&["guid", RUN_PROPERTY], &["rpool/a"]),
            [
                "zfs",
                "get",
                "-H",
                "-p",
                "-o",
                "name,property,value",
                "guid,proxborg:run",
                "rpool/a"
            ]
        );
    }
}
