//! `proxborg vzdump-hook PHASE [MODE VMID]`: what `hooks/proxborg-vzdump-hook` runs for every
//! vzdump hook phase (PVE-FACTS §3). Only `backup-end` does anything: the finished dump file
//! (`$TARGET`, compressed or not) becomes an archive named after the file, with the guest's
//! metadata; then, as the settings file says, the dump is deleted once the archive reads back
//! identical (`remove-dump: 1`) and the series is pruned (`prune: 1`). vzdump empties the
//! environment, so everything comes from argv, vzdump's variables and /etc/proxborg.conf.

use super::{access, Global, Outcome};
use crate::backup::{self, DumpRequest};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// vzdump phase (job-init, backup-start, backup-end, ...)
    phase: String,
    /// Backup mode (snapshot, suspend, stop), for guest phases
    mode: Option<String>,
    /// Guest id, for guest phases
    vmid: Option<u32>,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    if args.phase != "backup-end" {
        return Ok(Outcome::Success);
    }
    let Some(vmid) = args.vmid else {
        bail!("vzdump-hook backup-end: no vmid argument");
    };
    let target = std::env::var_os("TARGET").map(PathBuf::from);
    let Some(target) = target.filter(|t| t.as_os_str() != "-") else {
        bail!("vzdump-hook: guest {vmid}: TARGET is unset or stdout; nothing to archive");
    };
    if !target.is_file() {
        bail!(
            "vzdump-hook: guest {vmid}: TARGET {} is not a dump file (PBS storage?)",
            target.display()
        );
    }
    let vmtype = std::env::var("VMTYPE").unwrap_or_else(|_| "unknown".into());
    let hostname = std::env::var("HOSTNAME").unwrap_or_default();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    let (mut repo, _lock, _) = access::open_for_backup(global, "vzdump-hook")?;
    let conf = access::settings()?;
    let mut metadata = BTreeMap::new();
    metadata.insert("kind".into(), "vzdump".into());
    metadata.insert("vmtype".into(), vmtype.clone().into());
    metadata.insert("vmid".into(), vmid.into());
    metadata.insert("hostname".into(), hostname.into());
    metadata.insert("mode".into(), args.mode.clone().unwrap_or_default().into());
    metadata.insert("series".into(), format!("vzdump-{vmtype}-{vmid}").into());
    let done = backup::archive_dump(
        &mut repo,
        DumpRequest {
            dump: target.clone(),
            name: name.clone(),
            metadata,
            compression: conf.compression,
            remove_dump: conf.remove_dump,
        },
    )
    .context("vzdump-hook")?;
    eprintln!(
        "proxborg: archived {} as {name} ({} added)",
        target.display(),
        bytesize::ByteSize(done.manifest.stats.added_size)
    );
    for note in &done.notes {
        eprintln!("proxborg: note: {note}");
    }
    if done.removed {
        eprintln!("proxborg: verified and removed {}", target.display());
    }
    let mut outcome = Outcome::Success;
    if conf.file_level && vmtype == "lxc" {
        // The container's files too, from its own ZFS snapshots (after the image's lock and
        // repository handle are released: the backup takes its own).
        drop(_lock);
        drop(repo);
        let args = super::backup::Args {
            targets: vec![format!("{vmid}:")],
            ..Default::default()
        };
        outcome = super::backup::run(global, args)
            .with_context(|| format!("file-level backup of container {vmid}"))?;
    }
    Ok(outcome)
}
