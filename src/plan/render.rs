//! The human rendering of a plan, printed by `--dry-run` (the JSON form is the plan's serde
//! serialization). One job per paragraph, warnings and errors after, each naming its target.

use super::{BackupPlan, Job};
use crate::pve::idmap::IdKind;
use std::fmt::Write;

pub fn render_plan(plan: &BackupPlan) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Backup plan for node {} (snapshots @{})",
        plan.node, plan.snapshot
    );
    if plan.jobs.is_empty() {
        o.push_str("  nothing to back up\n");
    }
    for job in &plan.jobs {
        let asked = job.requested_by().join(", ");
        match job {
            Job::Image(j) => {
                let what = match j.guest_kind {
                    crate::pve::GuestKind::Lxc => "container",
                    crate::pve::GuestKind::Qemu => "VM",
                };
                let host = j
                    .hostname
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                let _ = writeln!(
                    o,
                    "  {}\n    vzdump image of {what} {}{host}  [from {asked}]",
                    j.archive, j.vmid
                );
            }
            Job::Zvol(j) => {
                let host = j
                    .hostname
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                let agent = match (j.agent, j.freeze_fs) {
                    (true, true) => "filesystems frozen through the guest agent",
                    (true, false) => "freeze-fs=0: crash-consistent",
                    _ => "no guest agent: crash-consistent",
                };
                let _ = writeln!(
                    o,
                    "  {}\n    zvols of VM {}{host} ({agent})  [from {asked}]",
                    j.archive, j.vmid
                );
                for d in &j.disks {
                    let _ = writeln!(o, "    {:<8} <- zfs send {}", d.key, d.snapshot);
                }
            }
            Job::ContainerFiles(j) => {
                let host = j
                    .hostname
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                let map = if j.idmap.is_identity() {
                    "privileged, ids as on the host".to_string()
                } else {
                    let m: Vec<String> = j
                        .idmap
                        .entries
                        .iter()
                        .map(|e| {
                            format!(
                                "{} {} {} {}",
                                if e.kind == IdKind::Uid { 'u' } else { 'g' },
                                e.ct_start,
                                e.host_start,
                                e.count
                            )
                        })
                        .collect();
                    format!("id map {}", m.join(", "))
                };
                let _ = writeln!(
                    o,
                    "  {}\n    files of container {}{host}, {map}  [from {asked}]",
                    j.archive, j.vmid
                );
                let _ = writeln!(
                    o,
                    "    ./etc/vzdump/pct.conf, ./etc/vzdump/pct.fw{}",
                    if j.has_firewall { "" } else { " (empty)" }
                );
                for v in &j.volumes {
                    let _ = writeln!(o, "    {:<8} {:<20} <- {}", v.key, v.mp, v.snapshot);
                }
                for s in &j.skipped {
                    let _ = writeln!(o, "    {:<8} {:<20} skipped: {}", s.key, s.mp, s.reason);
                }
            }
            Job::Dataset(j) => {
                let _ = writeln!(
                    o,
                    "  {}\n    dataset {} at {} (not recursive)  [from {asked}]",
                    j.archive,
                    j.dataset,
                    j.path.display()
                );
            }
        }
    }
    if !plan.warnings.is_empty() {
        o.push_str("Warnings:\n");
        for w in &plan.warnings {
            let _ = writeln!(o, "  {}  [from {}]", w.message, w.target);
        }
    }
    if !plan.errors.is_empty() {
        o.push_str("Errors:\n");
        for e in &plan.errors {
            let _ = writeln!(o, "  {}  [from {}]", e.error, e.target);
        }
    }
    o
}
