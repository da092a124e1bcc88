//! Archive names, kept as the original shell proxborg made them so existing prune scripts keep
//! working (DESIGN "What the user runs"). The timestamp is `YYYY_MM_DD-HH_MM_SS` in the
//! caller's local time, as vzdump names its files; the ZFS snapshot name uses UTC instead so
//! that it sorts and never repeats across DST changes.

use crate::pve::{GuestKind, Vmid};
use jiff::civil::DateTime;

pub fn name_timestamp(t: DateTime) -> String {
    t.strftime("%Y_%m_%d-%H_%M_%S").to_string()
}

/// `vzdump-lxc-<vmid>-<ts>.tar` / `vzdump-qemu-<vmid>-<ts>.vma`; with a hostname
/// (`--hostname-in-name`) it replaces `vzdump`: `tank-lxc-100-<ts>.tar`.
pub fn image_archive_name(
    kind: GuestKind,
    vmid: Vmid,
    hostname: Option<&str>,
    t: DateTime,
) -> String {
    let ext = match kind {
        GuestKind::Lxc => "tar",
        GuestKind::Qemu => "vma",
    };
    let head = hostname.unwrap_or("vzdump");
    format!(
        "{head}-{}-{vmid}-{}.{ext}",
        kind.as_str(),
        name_timestamp(t)
    )
}

/// `dump-<vmid>-<ts>`, or `<hostname>-<vmid>-<ts>`.
pub fn files_archive_name(vmid: Vmid, hostname: Option<&str>, t: DateTime) -> String {
    format!(
        "{}-{vmid}-{}",
        hostname.unwrap_or("dump"),
        name_timestamp(t)
    )
}

/// `dataset-<path with every non-alphanumeric, non-dash byte as a dash>--<ts>`; the double dash
/// keeps a prune by prefix from catching a sub-path. With `--hostname-in-name` the node's
/// hostname replaces `dataset`.
pub fn dataset_archive_name(path: &str, node_hostname: Option<&str>, t: DateTime) -> String {
    let dashed: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "{}{dashed}--{}",
        node_hostname.unwrap_or("dataset"),
        name_timestamp(t)
    )
}

/// The snapshot part of every snapshot one run takes: `proxborg-YYYYMMDDTHHMMSSZ` (UTC).
pub fn snapshot_name(t: jiff::Timestamp) -> String {
    format!(
        "{}{}",
        crate::zfs::SNAPSHOT_PREFIX,
        t.strftime("%Y%m%dT%H%M%SZ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn names_as_the_shell_proxborg_made_them() {
        let t = date(2026, 11, 3).at(7, 5, 9, 0);
        assert_eq!(
            image_archive_name(GuestKind::Lxc, Vmid(100), None, t),
            "vzdump-lxc-100-2026_11_03-07_05_09.tar"
        );
        assert_eq!(
            image_archive_name(GuestKind::Qemu, Vmid(200), None, t),
            "vzdump-qemu-200-2026_11_03-07_05_09.vma"
        );
        assert_eq!(
            image_archive_name(GuestKind::Lxc, Vmid(100), Some("tank"), t),
            "tank-lxc-100-2026_11_03-07_05_09.tar"
        );
        assert_eq!(
            files_archive_name(Vmid(100), None, t),
            "dump-100-2026_11_03-07_05_09"
        );
        assert_eq!(
            files_archive_name(Vmid(100), Some("tank"), t),
            "tank-100-2026_11_03-07_05_09"
        );
        assert_eq!(
            dataset_archive_name("/rpool/data/ds", None, t),
            "dataset-rpool-data-ds--2026_11_03-07_05_09"
        );
        assert_eq!(
            dataset_archive_name("/srv/media files", Some("pve1"), t),
            "pve1-srv-media-files--2026_11_03-07_05_09"
        );
        let ts: jiff::Timestamp = "2026-11-23T07:19:00Z".parse().unwrap();
        assert_eq!(snapshot_name(ts), "proxborg-20261123T071900Z");
    }
}
