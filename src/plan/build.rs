//! Resolving target words against the PVE state and the dataset list, then building one job
//! per guest/dataset. A guest asked for twice (directly, by hostname, through pools) gets one
//! job per kind; `:` and `:!` together mean `:!`; a QEMU guest's `:` means its image.

use super::names::{dataset_archive_name, files_archive_name, image_archive_name, snapshot_name};
use super::target::{parse_target, GuestSelector, Mode, Target};
use super::*;
use crate::pve::storage::VolumeDataset;
use crate::pve::text::{parse_bool, PropertyString};
use crate::pve::volume::{lxc_mounts, qemu_disks, split_volid, MountSource};
use crate::pve::vzdump::{vzdump_qemu_conf, QmdumpMap};
use crate::pve::{Guest, PveState};
use crate::zfs::{DatasetType, Mountpoint, ZfsListEntry};
use serde::Serialize;
use std::path::Path;

pub struct PlanOptions {
    /// The run's time: archive names use its civil (local) time, snapshots its UTC instant.
    pub now: jiff::Zoned,
    /// `--hostname-in-name`.
    pub hostname_in_name: bool,
    /// `--vm-mode`: how VMs are read.
    pub vm_mode: VmMode,
}

/// How a VM's disks are read (`--vm-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmMode {
    /// zvol mode when every disk vzdump would back up is a zvol, vzdump otherwise.
    #[default]
    Auto,
    /// Always `zfs send` from the zvols; an error for a VM with other disks.
    Zvol,
    /// Always `vzdump --stdout`.
    Vzdump,
}

struct Request {
    vmid: Vmid,
    mode: Mode,
    word: String,
}

fn err(plan: &mut BackupPlan, target: &str, error: PlanError) {
    plan.errors.push(TargetError {
        target: target.to_string(),
        message: error.to_string(),
        error,
    });
}

/// Which local guest a vmid names, or why none.
fn local_guest(state: &PveState, vmid: Vmid) -> Result<&Guest, PlanError> {
    if let Some(g) = state.guests.get(&vmid) {
        return Ok(g);
    }
    match state.vmlist.ids.get(&vmid) {
        Some(e) if e.node != state.node => Err(PlanError::OtherNode {
            vmid,
            node: e.node.clone(),
        }),
        _ => Err(PlanError::UnknownVmid(vmid)),
    }
}

fn by_hostname(state: &PveState, name: &str) -> Result<Vmid, PlanError> {
    let matches: Vec<(Vmid, GuestKind)> = state
        .guests
        .values()
        .filter(|g| g.hostname() == Some(name))
        .map(|g| (g.vmid, g.kind))
        .collect();
    match matches.as_slice() {
        [] => Err(PlanError::UnknownHostname(name.to_string())),
        [(v, _)] => Ok(*v),
        _ => Err(PlanError::AmbiguousHostname {
            hostname: name.to_string(),
            matches,
        }),
    }
}

fn clean_path(p: &Path) -> Option<String> {
    let s = p.to_str()?;
    if s.split('/').any(|c| c == "." || c == "..") {
        return None;
    }
    let t = s.trim_end_matches('/');
    Some(if t.is_empty() {
        "/".to_string()
    } else {
        t.to_string()
    })
}

fn find_dataset<'a>(
    datasets: &'a [ZfsListEntry],
    path: &str,
) -> Result<&'a ZfsListEntry, PlanError> {
    let is_fs = |e: &&ZfsListEntry| e.kind == DatasetType::Filesystem;
    if let Some(e) = datasets
        .iter()
        .filter(is_fs)
        .find(|e| e.mountpoint.path().is_some_and(|m| m == Path::new(path)))
    {
        return Ok(e);
    }
    // Say which dataset the path lies in, since that is usually the mistake.
    let hint = datasets
        .iter()
        .filter(is_fs)
        .filter_map(|e| e.mountpoint.path().map(|m| (e, m)))
        .filter(|(_, m)| Path::new(path).starts_with(m))
        .max_by_key(|(_, m)| m.as_os_str().len())
        .map(|(e, m)| format!("it lies inside {} mounted at {}", e.name, m.display()));
    Err(PlanError::NotADatasetMountpoint {
        path: path.to_string(),
        hint,
    })
}

/// Builds the plan. `datasets` is the parsed `zfs list -H -o name,mountpoint,type` of the host.
pub fn build_plan(
    state: &PveState,
    datasets: &[ZfsListEntry],
    words: &[String],
    opts: &PlanOptions,
) -> BackupPlan {
    let mut plan = BackupPlan {
        node: state.node.clone(),
        snapshot: snapshot_name(opts.now.timestamp()),
        jobs: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    let mut requests: Vec<Request> = Vec::new();
    let mut dataset_reqs: Vec<(String, String)> = Vec::new();
    for word in words {
        let target = match parse_target(word) {
            Ok(t) => t,
            Err(e) => {
                err(&mut plan, word, PlanError::Syntax(e));
                continue;
            }
        };
        match target {
            Target::Guest { guest, mode } => {
                let vmid = match guest {
                    GuestSelector::Vmid(v) => v,
                    GuestSelector::Hostname(h) => match by_hostname(state, &h) {
                        Ok(v) => v,
                        Err(e) => {
                            err(&mut plan, word, e);
                            continue;
                        }
                    },
                };
                match local_guest(state, vmid) {
                    Ok(_) => requests.push(Request {
                        vmid,
                        mode,
                        word: word.clone(),
                    }),
                    Err(e) => err(&mut plan, word, e),
                }
            }
            Target::Pool { pool, mode } => {
                let Some(p) = state.pools.iter().find(|p| p.id == pool) else {
                    let known = state.pools.iter().map(|p| p.id.clone()).collect();
                    err(&mut plan, word, PlanError::UnknownPool { pool, known });
                    continue;
                };
                if p.vmids.is_empty() {
                    plan.warnings.push(PlanWarning {
                        target: word.clone(),
                        message: format!("pool '{pool}' has no guests"),
                    });
                }
                for &vmid in &p.vmids {
                    let label = format!("{word} ({vmid})");
                    match local_guest(state, vmid) {
                        Ok(_) => requests.push(Request {
                            vmid,
                            mode,
                            word: label,
                        }),
                        Err(e) => err(&mut plan, &label, e),
                    }
                }
            }
            Target::Dataset { path } => match clean_path(&path) {
                Some(p) => match find_dataset(datasets, &p) {
                    Ok(e) => dataset_reqs.push((e.name.clone(), word.clone())),
                    Err(e) => err(&mut plan, word, e),
                },
                None => err(
                    &mut plan,
                    word,
                    PlanError::NotADatasetMountpoint {
                        path: path.display().to_string(),
                        hint: Some("use a clean absolute path".into()),
                    },
                ),
            },
        }
    }
    add_guest_jobs(&mut plan, state, datasets, &requests, opts);
    add_dataset_jobs(&mut plan, datasets, &dataset_reqs, opts);
    plan
}

fn add_guest_jobs(
    plan: &mut BackupPlan,
    state: &PveState,
    datasets: &[ZfsListEntry],
    requests: &[Request],
    opts: &PlanOptions,
) {
    let t = opts.now.datetime();
    // (vmid, image?) in first-request order; the files mode is the widest asked for.
    let mut order: Vec<(Vmid, bool)> = Vec::new();
    for r in requests {
        let Ok(g) = local_guest(state, r.vmid) else {
            continue;
        };
        let image = r.mode == Mode::Image || g.kind == GuestKind::Qemu;
        if !order.contains(&(r.vmid, image)) {
            order.push((r.vmid, image));
        }
    }
    for (vmid, image) in order {
        let Ok(guest) = local_guest(state, vmid) else {
            continue;
        };
        let mine = |r: &&Request| {
            r.vmid == vmid && (r.mode == Mode::Image || guest.kind == GuestKind::Qemu) == image
        };
        let requested_by: Vec<String> = requests
            .iter()
            .filter(mine)
            .map(|r| r.word.clone())
            .collect();
        if let Ok(conf) = &guest.config {
            let label = requested_by
                .first()
                .cloned()
                .unwrap_or_else(|| vmid.to_string());
            for w in &conf.warnings {
                plan.warnings.push(PlanWarning {
                    target: label.clone(),
                    message: format!("ignored like PVE does: {w}"),
                });
            }
        }
        let hostname = guest.hostname().map(str::to_string);
        let name_host = if opts.hostname_in_name {
            hostname.as_deref()
        } else {
            None
        };
        if image && guest.kind == GuestKind::Qemu && opts.vm_mode != VmMode::Vzdump {
            match zvol_job(plan, state, guest, datasets) {
                Ok(mut job) => {
                    job.archive = image_archive_name(guest.kind, vmid, name_host, t);
                    job.requested_by = requested_by;
                    plan.jobs.push(Job::Zvol(job));
                    continue;
                }
                Err(reason) if opts.vm_mode == VmMode::Zvol => {
                    let label = requested_by
                        .first()
                        .cloned()
                        .unwrap_or_else(|| vmid.to_string());
                    err(plan, &label, PlanError::NotAllZvols { vmid, reason });
                    continue;
                }
                Err(_) => {} // auto: through vzdump
            }
        }
        if image {
            plan.jobs.push(Job::Image(ImageJob {
                vmid,
                guest_kind: guest.kind,
                archive: image_archive_name(guest.kind, vmid, name_host, t),
                hostname,
                requested_by,
            }));
            continue;
        }
        let all = requests
            .iter()
            .filter(mine)
            .any(|r| r.mode == Mode::FilesAll);
        let label = requested_by
            .first()
            .cloned()
            .unwrap_or_else(|| vmid.to_string());
        match files_job(plan, state, guest, datasets, all, &label) {
            Ok(mut job) => {
                job.archive = files_archive_name(vmid, name_host, t);
                job.requested_by = requested_by;
                plan.jobs.push(Job::ContainerFiles(job));
            }
            Err(e) => err(plan, &label, e),
        }
    }
}

/// A VM as a zvol job, or why it cannot be one (a disk not on a zvol, no disk at all).
fn zvol_job(
    plan: &BackupPlan,
    state: &PveState,
    guest: &Guest,
    datasets: &[ZfsListEntry],
) -> Result<ZvolJob, String> {
    let conf = guest.config.as_ref().map_err(|e| e.clone())?;
    let disks = qemu_disks(conf, &guest.conf_path).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for d in disks.iter().filter(|d| d.vzdump_includes()) {
        let (storage, volname) = split_volid(&d.volume)
            .ok_or_else(|| format!("{} is {}, not a storage volume", d.key, d.volume))?;
        let dataset = match state.storage.volume_dataset(storage, volname) {
            Ok(VolumeDataset::Zvol { dataset }) => dataset,
            Ok(VolumeDataset::Subvol { dataset }) => {
                return Err(format!("{} is {dataset}, a filesystem", d.key))
            }
            Err(e) => return Err(format!("{} ({}): {e}", d.key, d.volume)),
        };
        let ds = datasets
            .iter()
            .find(|e| e.name == dataset && e.kind == DatasetType::Volume)
            .and_then(ZfsListEntry::dataset)
            .ok_or_else(|| format!("{}: `zfs list` shows no zvol {dataset}", d.key))?;
        let snapshot = ds.snapshot(&plan.snapshot).map_err(|e| e.to_string())?;
        out.push(ZvolDisk {
            key: d.key.clone(),
            storage: storage.to_string(),
            dataset: ds,
            snapshot,
        });
    }
    if out.is_empty() {
        return Err("it has no disk to back up".into());
    }
    let maps: Vec<QmdumpMap> = out
        .iter()
        .map(|d| QmdumpMap {
            key: &d.key,
            storage: &d.storage,
            format: "raw",
        })
        .collect();
    let (agent, freeze_fs) = agent_freeze(conf.main.get("agent"));
    Ok(ZvolJob {
        vmid: guest.vmid,
        hostname: guest.hostname().map(str::to_string),
        archive: String::new(),
        qemu_conf: vzdump_qemu_conf(&guest.conf_text, &maps),
        qemu_fw: guest.firewall.clone(),
        disks: out,
        agent,
        freeze_fs,
        requested_by: Vec::new(),
    })
}

/// `agent: enabled[,freeze-fs=0|1]`: whether the guest agent is on, and whether backups may
/// freeze its filesystems (`freeze-fs`, default 1; older PVE spells it `freeze-fs-on-backup`,
/// docs/QM-GUEST.md §2). A value PVE would reject counts as off.
pub(super) fn agent_freeze(value: Option<&str>) -> (bool, bool) {
    let Some(p) = value.and_then(|v| PropertyString::parse(v).ok()) else {
        return (false, false);
    };
    let flag = |key: &str| p.get(key).and_then(parse_bool);
    let enabled = p
        .default
        .as_deref()
        .and_then(parse_bool)
        .or_else(|| flag("enabled"))
        .unwrap_or(false);
    let freeze = flag("freeze-fs")
        .or_else(|| flag("freeze-fs-on-backup"))
        .or_else(|| flag("guest-fsfreeze"))
        .unwrap_or(true);
    (enabled, enabled && freeze)
}

fn files_job(
    plan: &mut BackupPlan,
    state: &PveState,
    guest: &Guest,
    datasets: &[ZfsListEntry],
    all: bool,
    label: &str,
) -> Result<FilesJob, PlanError> {
    let vmid = guest.vmid;
    let broken = |error: String| PlanError::BrokenConfig { vmid, error };
    let conf = guest.config.as_ref().map_err(|e| broken(e.clone()))?;
    let mounts = lxc_mounts(conf, &guest.conf_path).map_err(|e| broken(e.to_string()))?;
    let idmap = IdMap::from_config(conf, &guest.conf_path).map_err(|e| broken(e.to_string()))?;
    let pct_conf =
        crate::pve::vzdump_pct_conf(&guest.conf_text).map_err(|e| broken(e.to_string()))?;
    let mut volumes = Vec::new();
    let mut skipped = Vec::new();
    for m in mounts {
        let skip = |reason: SkipReason| SkippedMount {
            key: m.key.clone(),
            mp: m.mp.clone(),
            reason,
        };
        let rootfs_err = |detail: String| PlanError::RootfsNotZfs {
            vmid,
            volume: match &m.source {
                MountSource::Volume { storage, volname } => format!("{storage}:{volname}"),
                MountSource::Bind { path } | MountSource::Device { path } => path.clone(),
            },
            detail,
        };
        let (storage, volname) = match &m.source {
            MountSource::Bind { path } if m.is_rootfs() => {
                return Err(rootfs_err(format!("bind mount of {path}")))
            }
            MountSource::Device { path } if m.is_rootfs() => {
                return Err(rootfs_err(format!("device {path}")))
            }
            MountSource::Bind { path } => {
                skipped.push(skip(SkipReason::BindMount { path: path.clone() }));
                continue;
            }
            MountSource::Device { path } => {
                skipped.push(skip(SkipReason::DeviceMount { path: path.clone() }));
                continue;
            }
            MountSource::Volume { storage, volname } => (storage, volname),
        };
        if !m.is_rootfs() && !all && m.backup != Some(true) {
            skipped.push(skip(SkipReason::BackupDisabled));
            continue;
        }
        let dataset = match state.storage.volume_dataset(storage, volname) {
            Ok(VolumeDataset::Subvol { dataset }) => dataset,
            Ok(VolumeDataset::Zvol { dataset }) => {
                let detail = format!("{dataset} is a zvol, not a filesystem");
                if m.is_rootfs() {
                    return Err(rootfs_err(detail));
                }
                skipped.push(skip(SkipReason::NotZfs {
                    storage: storage.clone(),
                    detail,
                }));
                continue;
            }
            Err(e) => {
                if m.is_rootfs() {
                    return Err(rootfs_err(e.to_string()));
                }
                skipped.push(skip(SkipReason::NotZfs {
                    storage: storage.clone(),
                    detail: e.to_string(),
                }));
                continue;
            }
        };
        let not_found = || PlanError::DatasetNotFound {
            vmid,
            key: m.key.clone(),
            dataset: dataset.clone(),
        };
        let entry = datasets
            .iter()
            .find(|e| e.name == dataset && e.kind == DatasetType::Filesystem)
            .ok_or_else(not_found)?;
        let ds = entry.dataset().ok_or_else(not_found)?;
        let snapshot = ds.snapshot(&plan.snapshot).map_err(|_| not_found())?;
        volumes.push(PlannedVolume {
            key: m.key.clone(),
            archive_path: m.mp.trim_start_matches('/').to_string(),
            mp: m.mp.clone(),
            dataset: ds,
            mountpoint: match &entry.mountpoint {
                Mountpoint::Path(p) => Some(p.clone()),
                _ => None,
            },
            snapshot,
        });
    }
    for s in &skipped {
        if s.reason != SkipReason::BackupDisabled {
            plan.warnings.push(PlanWarning {
                target: label.to_string(),
                message: format!(
                    "container {vmid}: {} ({}) skipped: {}",
                    s.key, s.mp, s.reason
                ),
            });
        }
    }
    Ok(FilesJob {
        vmid,
        hostname: guest.hostname().map(str::to_string),
        archive: String::new(),
        all_mountpoints: all,
        unprivileged: conf.unprivileged(),
        idmap,
        volumes,
        skipped,
        running: None,
        pct_conf,
        pct_fw: guest.firewall.clone().unwrap_or_default(),
        has_firewall: guest.firewall.is_some(),
        requested_by: Vec::new(),
    })
}

fn add_dataset_jobs(
    plan: &mut BackupPlan,
    datasets: &[ZfsListEntry],
    reqs: &[(String, String)],
    opts: &PlanOptions,
) {
    let node_host = opts.hostname_in_name.then_some(plan.node.clone());
    let mut seen: Vec<String> = Vec::new();
    for (name, _) in reqs {
        if seen.contains(name) {
            continue;
        }
        seen.push(name.clone());
        let Some(entry) = datasets.iter().find(|e| &e.name == name) else {
            continue;
        };
        let (Some(ds), Some(path)) = (entry.dataset(), entry.mountpoint.path()) else {
            continue;
        };
        let Ok(snapshot) = ds.snapshot(&plan.snapshot) else {
            continue;
        };
        plan.jobs.push(Job::Dataset(DatasetJob {
            archive: dataset_archive_name(
                &path.display().to_string(),
                node_host.as_deref(),
                opts.now.datetime(),
            ),
            path: path.to_path_buf(),
            dataset: ds,
            snapshot,
            requested_by: reqs
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, w)| w.clone())
                .collect(),
        }));
    }
}
