//! `proxborg restore ARCHIVE VMID`: a backup back as a new guest in one step, through PVE's
//! `pct restore` or `qmrestore`, with the volumes, sizes, mount points and privilege the
//! stored config names (`--print` shows the equivalent command instead).

use super::progress::Progress;
use super::{access, backup, Global, Outcome};
use crate::host::RealHost;
use crate::plan::restore::RestoreOptions;
use crate::pve::Vmid;
use crate::restore;
use anyhow::{anyhow, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Archive to restore (a container's files, or a vzdump tar or VMA)
    archive: String,
    /// Id of the new guest
    vmid: String,
    /// Put every volume on this storage (default: the storage each came from)
    #[arg(long)]
    storage: Option<String>,
    /// Overwrite an existing guest with this id
    #[arg(long)]
    force: bool,
    /// New MAC addresses (and, for VMs, a new smbios uuid)
    #[arg(long)]
    unique: bool,
    /// Print the equivalent command instead of restoring
    #[arg(long)]
    print: bool,
    /// Where temporary tar files go when `pct restore` must read a file
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    tmpdir: PathBuf,
    /// Show progress (on a terminal only)
    #[arg(long)]
    progress: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let vmid = Vmid::parse(&args.vmid)
        .ok_or_else(|| anyhow!("{:?} is not a guest id (100 or more)", args.vmid))?;
    let (repo, warnings) = access::open(global)?;
    let (_, manifest) = repo.find_archive(&args.archive)?;
    let options = RestoreOptions {
        storage: args.storage.clone(),
        force: args.force,
        unique: args.unique,
    };
    let plan = restore::plan(&repo, &manifest, vmid, &options)?;
    if let restore::RestorePlan::Container { notes, .. } = &plan {
        for n in notes {
            eprintln!("proxborg: note: {n}");
        }
    }
    if args.print {
        println!("{}", plan.command_line(&args.archive, vmid, &args.tmpdir));
        return Ok(Outcome::Success);
    }
    let host = RealHost::new(backup::pve_root()?);
    let progress = Progress::new(args.progress);
    restore::restore(
        &host,
        &repo,
        &manifest,
        &plan,
        &restore::Target {
            vmid,
            force: args.force,
            tmpdir: &args.tmpdir,
        },
        &mut |n| progress.set(|| format!("{n} entries")),
    )?;
    progress.finish();
    eprintln!("proxborg: restored {} as guest {vmid}", args.archive);
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}
