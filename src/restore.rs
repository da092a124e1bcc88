//! `proxborg restore`: an archive back as a new guest in one step, through PVE's own
//! `pct restore` and `qmrestore` (run by the host), with the arguments a piped archive cannot
//! give them (`plan::restore`).
//!
//! - A container's file-level archive: `export-tar | pct restore VMID - --rootfs ... --mpN ...
//!   --unprivileged 1`; a container with its own `lxc.idmap` goes through a tar file instead
//!   (PVE reads the map from a file archive before extracting, never from a pipe).
//! - A container's vzdump tar (image mode, or the vzdump hook's): written to a file and
//!   restored from it, as PVE restores its own dumps (sizes from the archive's config).
//! - A VM's drives (`proxborg VMID`): `export-vma | qmrestore - VMID`; a VMA file stored by
//!   the vzdump hook: `qmrestore - VMID`, fed the stored stream.
//!
//! An existing VMID is refused unless `force`, before anything is read or written.

use crate::host::{GuestInput, Host, HostError};
use crate::item::filter::Selection;
use crate::plan::restore::{
    container_restore, flags, vm_restore_args, RestoreOptions, RestorePlanError,
};
use crate::pve::Vmid;
use crate::repo::{Manifest, RepoError, Repository};
use crate::retrieve::export_tar::{export_tar, TarCompression, TarExportError};
use crate::retrieve::export_vma::export_vma;
use crate::retrieve::extract::{contents_to, ExtractError};
use crate::retrieve::ArchiveReader;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Plan(#[from] RestorePlanError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Tar(#[from] TarExportError),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Vma(#[from] crate::retrieve::export_vma::VmaExportError),
    #[error("{0}")]
    Refused(String),
}

/// What `restore` will do, shown by `--print`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestorePlan {
    /// `export-tar ARCHIVE - | pct restore VMID - ARGS`, or through a tar file.
    Container {
        args: Vec<String>,
        via_file: bool,
        notes: Vec<String>,
    },
    /// The stored vzdump tar, written to a file, then `pct restore VMID FILE ARGS`.
    ContainerDump { args: Vec<String> },
    /// The stored VMA into `qmrestore ARGS`.
    Vm { args: Vec<String> },
    /// The stored drives, as a VMA (`export-vma`), into `qmrestore ARGS`.
    VmDrives { args: Vec<String> },
}

/// The largest `pct.conf` read into memory (PVE's own configs are a few KiB).
const MAX_CONFIG: u64 = 1 << 20;

pub fn plan(
    repo: &Repository,
    manifest: &Manifest,
    vmid: Vmid,
    options: &RestoreOptions,
) -> Result<RestorePlan, RestoreError> {
    let meta = |k: &str| manifest.metadata.get(k).and_then(|v| v.as_str());
    // A hook archive of a VMA is stored as drives (`format`); other hook archives are dumps.
    let vzdump = match meta("format") {
        Some(format) => format == "vzdump",
        None => meta("kind") == Some("vzdump"),
    };
    let guest = meta("vmtype").or(meta("kind"));
    match (guest, vzdump) {
        (Some("lxc"), false) => {
            let conf = read_pct_conf(repo, manifest)?;
            let r = container_restore(&conf, vmid, options)?;
            Ok(RestorePlan::Container {
                args: r.args,
                via_file: r.via_file,
                notes: r.notes,
            })
        }
        (Some("lxc"), true) => Ok(RestorePlan::ContainerDump {
            args: flags(options, true),
        }),
        (Some("qemu"), false) if meta("format") == Some("drives") => Ok(RestorePlan::VmDrives {
            args: vm_restore_args(vmid, options),
        }),
        (Some("qemu"), true) => {
            if !manifest.name.ends_with(".vma") {
                return Err(RestoreError::Refused(format!(
                    "archive {:?} is a compressed VMA, which qmrestore cannot read from a pipe; `proxborg extract {} --stdout > FILE` and `qmrestore FILE VMID` restore it",
                    manifest.name, manifest.name
                )));
            }
            Ok(RestorePlan::Vm {
                args: vm_restore_args(vmid, options),
            })
        }
        _ => Err(RestoreError::Refused(format!(
            "archive {:?} is not a backup of a guest (kind {}); use extract or export-tar",
            manifest.name,
            meta("kind").unwrap_or("unknown")
        ))),
    }
}

impl RestorePlan {
    /// The shell pipeline that does the same, for `--print`; a temporary tar goes in `tmpdir`.
    pub fn command_line(&self, archive: &str, vmid: Vmid, tmpdir: &Path) -> String {
        let tmp = tmpdir.display();
        match self {
            RestorePlan::Container { args, via_file, .. } if *via_file => format!(
                "proxborg export-tar {archive} {tmp}/vzdump-lxc-{vmid}-restore.tar && pct restore {vmid} {tmp}/vzdump-lxc-{vmid}-restore.tar {}",
                args.join(" ")
            ),
            RestorePlan::Container { args, .. } => format!(
                "proxborg export-tar {archive} - | pct restore {vmid} - {}",
                args.join(" ")
            ),
            RestorePlan::ContainerDump { args } => format!(
                "proxborg extract {archive} --stdout > {tmp}/{archive} && pct restore {vmid} {tmp}/{archive} {}",
                args.join(" ")
            )
            .trim_end()
            .to_string(),
            RestorePlan::Vm { args } => {
                format!("proxborg extract {archive} --stdout | qmrestore {}", args.join(" "))
            }
            RestorePlan::VmDrives { args } => {
                format!("proxborg export-vma {archive} - | qmrestore {}", args.join(" "))
            }
        }
    }
}

/// The guest a restore makes.
pub struct Target<'a> {
    pub vmid: Vmid,
    /// Overwrite a guest that already has this id.
    pub force: bool,
    /// Where temporary tar files go (removed whatever happens).
    pub tmpdir: &'a Path,
}

/// Runs `plan`: refuses an existing guest unless `force`, then feeds PVE's restore.
pub fn restore(
    host: &dyn Host,
    repo: &Repository,
    manifest: &Manifest,
    plan: &RestorePlan,
    target: &Target,
    on_entry: &mut dyn FnMut(u64),
) -> Result<(), RestoreError> {
    let (vmid, tmpdir) = (target.vmid, target.tmpdir);
    if !target.force && host.pve_state()?.vmlist.ids.contains_key(&vmid) {
        return Err(RestoreError::Refused(format!(
            "guest {vmid} already exists; give --force to overwrite it, as with pct restore and qmrestore"
        )));
    }
    let all = || ArchiveReader::open(repo, manifest, Selection::default());
    match plan {
        RestorePlan::Container {
            args,
            via_file: false,
            ..
        } => {
            let mut input = host.pct_restore(vmid, "-", args)?;
            let tar = TarCompression::None;
            let written = export_tar(
                repo,
                manifest,
                Selection::default(),
                &mut input,
                tar,
                on_entry,
            );
            finish(input, written.map_err(RestoreError::from))
        }
        RestorePlan::Container { args, .. } => {
            let file = TempTar::new(tmpdir, &format!("vzdump-lxc-{vmid}-restore.tar"))?;
            let out = std::fs::File::create(&file.0).map_err(|e| io(&file.0, e))?;
            export_tar(
                repo,
                manifest,
                Selection::default(),
                out,
                TarCompression::None,
                on_entry,
            )?;
            host.pct_restore(vmid, &file.0.to_string_lossy(), args)?
                .finish()
                .map_err(RestoreError::from)
        }
        RestorePlan::ContainerDump { args } => {
            let file = TempTar::new(tmpdir, &manifest.name)?;
            let mut out = std::fs::File::create(&file.0).map_err(|e| io(&file.0, e))?;
            contents_to(all(), &mut out)?;
            host.pct_restore(vmid, &file.0.to_string_lossy(), args)?
                .finish()
                .map_err(RestoreError::from)
        }
        RestorePlan::Vm { args } => {
            let mut input = host.qmrestore(args)?;
            let written = contents_to(all(), &mut input).map_err(RestoreError::from);
            finish(input, written)
        }
        RestorePlan::VmDrives { args } => {
            let mut input = host.qmrestore(args)?;
            let written = export_vma(repo, manifest, &mut input)
                .map(drop)
                .map_err(RestoreError::from);
            finish(input, written)
        }
    }
}

/// Waits for the restore program; its own failure explains more than our broken pipe.
fn finish(
    input: Box<dyn GuestInput>,
    written: Result<(), RestoreError>,
) -> Result<(), RestoreError> {
    let finished = input.finish().map_err(RestoreError::from);
    match (written, finished) {
        (_, Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Ok(())) => Ok(()),
    }
}

fn io(path: &Path, e: std::io::Error) -> RestoreError {
    RestoreError::Host(HostError::io(path.display(), e))
}

/// The archive's `./etc/vzdump/pct.conf`.
fn read_pct_conf(repo: &Repository, manifest: &Manifest) -> Result<String, RestoreError> {
    let wanted = Selection {
        includes: vec![b"etc/vzdump/pct.conf".to_vec()],
        ..Default::default()
    };
    for entry in ArchiveReader::open(repo, manifest, wanted) {
        let mut entry = entry?;
        if entry.item.path != b"etc/vzdump/pct.conf" || !entry.item.is_file() {
            continue;
        }
        let mut text = Vec::new();
        (&mut entry.content)
            .take(MAX_CONFIG)
            .read_to_end(&mut text)
            .map_err(|e| RestoreError::Refused(format!("reading the archive's pct.conf: {e}")))?;
        return String::from_utf8(text)
            .map_err(|_| RestoreError::Refused("the archive's pct.conf is not UTF-8".into()));
    }
    Err(RestoreError::Refused(format!(
        "archive {:?} has no ./etc/vzdump/pct.conf",
        manifest.name
    )))
}

/// A temporary tar file for `pct restore`, removed when dropped.
struct TempTar(PathBuf);

impl TempTar {
    fn new(dir: &Path, name: &str) -> Result<TempTar, RestoreError> {
        let dir = dir.join(format!("proxborg-restore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(TempTar(dir.join(name)))
    }
}

impl Drop for TempTar {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
