//! `proxborg umount MOUNTPOINT`: ends a `proxborg mount` (its process then exits 0). Refuses
//! anything that is not a proxborg mount.

use super::Outcome;
use crate::host::fuse;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Where the archive or repository is mounted
    mountpoint: PathBuf,
}

pub fn run(args: Args) -> Result<Outcome> {
    let mnt = fuse::mount_point(&args.mountpoint)
        .with_context(|| format!("{}", args.mountpoint.display()))?;
    if !fuse::is_mounted(&mnt).context("reading /proc/self/mountinfo")? {
        bail!("{}: no proxborg mount there", mnt.display());
    }
    fuse::unmount(&mnt).map_err(anyhow::Error::msg)?;
    Ok(Outcome::Success)
}
