//! The `./etc/vzdump/pct.conf` vzdump writes into an LXC archive (PVE-FACTS §2.3): the current
//! config minus `lock`, `parent`, the pending section and all snapshot sections, re-emitted by
//! `write_pct_config` rules (description as encoded `#` lines first, then keys sorted, then the
//! raw `lxc.*` lines in order; `digest` never written; `unusedN` dropped when its volume is
//! still referenced).

use super::conf::{parse_guest_config, GuestKind};
use super::text::encode_text;
use super::{ConfigError, Vmid};
use std::path::Path;

/// Builds vzdump's `pct.conf` from the text of `lxc/<vmid>.conf`.
pub fn vzdump_pct_conf(conf_text: &str) -> Result<String, ConfigError> {
    // The vmid does not appear in the output; any valid one will do for parsing.
    let conf = parse_guest_config(GuestKind::Lxc, Vmid(100), Path::new("pct.conf"), conf_text)?;
    let main = &conf.main;
    let mut out = String::new();
    if let Some(d) = &main.description {
        // Perl's split(/\n/) keeps inner empty lines and drops trailing ones.
        let mut lines: Vec<&str> = d.split('\n').collect();
        while lines.last() == Some(&"") {
            lines.pop();
        }
        for line in lines {
            out.push('#');
            out.push_str(&encode_text(line));
            out.push('\n');
        }
    }
    let in_use: Vec<&str> = main
        .entries
        .iter()
        .filter(|(k, _)| {
            k == "rootfs" || (k.starts_with("mp") && k[2..].bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|(_, v)| v.split(',').next())
        .collect();
    let mut keys: Vec<&(String, String)> = main
        .entries
        .iter()
        .filter(|(k, v)| {
            let dropped = matches!(k.as_str(), "lock" | "parent" | "digest" | "snapstate");
            let unused_in_use = k.starts_with("unused") && in_use.contains(&v.as_str());
            !dropped && !unused_in_use
        })
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in keys {
        out.push_str(&format!("{k}: {v}\n"));
    }
    for (k, v) in &main.lxc {
        out.push_str(&format!("{k}: {v}\n"));
    }
    Ok(out)
}

/// A disk's `#qmdump#map:` line: `virtdev` (`scsi0`), its VMA device name, storage and format.
pub struct QmdumpMap<'a> {
    pub key: &'a str,
    pub storage: &'a str,
    pub format: &'a str,
}

/// The VMA device name of a drive key (`drive-scsi0`; TPM state is `drive-tpmstate0-backup`).
pub fn vma_device_name(key: &str) -> String {
    if key == "tpmstate0" {
        "drive-tpmstate0-backup".to_string()
    } else {
        format!("drive-{key}")
    }
}

/// Builds the `qemu-server.conf` vzdump embeds in a VMA (PVE-FACTS §4.1, `assemble`): the
/// lines of `qemu-server/<vmid>.conf` up to the first `[section]`, without `unusedN:`,
/// `lock:`, `parent:` and old `#vzdump#`/`#qmdump#` lines, then one `#qmdump#map:` line per
/// disk. Lines are copied as written, not re-emitted.
pub fn vzdump_qemu_conf(conf_text: &str, disks: &[QmdumpMap]) -> String {
    let mut out = String::new();
    for line in conf_text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if bare.starts_with('[') && bare.trim_end().ends_with(']') {
            break;
        }
        let dropped = bare.starts_with("#vzdump#")
            || bare.starts_with("#qmdump#")
            || bare.starts_with("lock:")
            || bare.starts_with("parent:")
            || bare
                .strip_prefix("unused")
                .and_then(|r| r.split_once(':'))
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !dropped {
            out.push_str(bare);
            out.push('\n');
        }
    }
    for d in disks {
        out.push_str(&format!(
            "#qmdump#map:{}:{}:{}:{}:\n",
            d.key,
            vma_device_name(d.key),
            d.storage,
            d.format
        ));
    }
    out
}

#[cfg(test)]
mod qemu_tests {
    use super::*;

    #[test]
    fn qemu_conf_is_cut_at_the_first_section_filtered_and_mapped() {
        let conf = "#a VM\nboot: order=scsi0\nlock: backup\nparent: snap1\nscsi0: local-zfs:vm-201-disk-0,size=1G\nunused0: local-zfs:vm-201-disk-9\n#qmdump#map:old\nagent: 1\n\n[snap1]\nscsi0: x\n";
        let maps = [QmdumpMap {
            key: "scsi0",
            storage: "local-zfs",
            format: "raw",
        }];
        assert_eq!(
            vzdump_qemu_conf(conf, &maps),
            "#a VM\nboot: order=scsi0\nscsi0: local-zfs:vm-201-disk-0,size=1G\nagent: 1\n\n#qmdump#map:scsi0:drive-scsi0:local-zfs:raw:\n"
        );
        assert_eq!(vma_device_name("tpmstate0"), "drive-tpmstate0-backup");
    }
}
