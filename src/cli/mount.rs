//! `proxborg mount [ARCHIVE] MOUNTPOINT`: one archive, or every archive as a directory, as a
//! read-only FUSE filesystem, served in the foreground until `proxborg umount`, `umount`,
//! `fusermount3 -u` or a signal (SIGINT, SIGTERM, SIGHUP unmount it). A shared repository lock
//! is held for as long as it is mounted, so `compact` cannot delete blobs under it.

use super::{access, warn, Global, Outcome};
use crate::host::fuse;
use crate::mount::fs::{load_tree, Archive, ArchiveFs, Report, View};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// ARCHIVE to mount at MOUNTPOINT; without it, every archive as a directory of MOUNTPOINT
    #[arg(value_name = "[ARCHIVE] MOUNTPOINT", num_args = 1..=2, required = true)]
    words: Vec<OsString>,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let (archive, mountpoint) = match &args.words[..] {
        [m] => (None, PathBuf::from(m)),
        [a, m] => (
            Some(
                a.to_str()
                    .ok_or_else(|| anyhow!("archive names are UTF-8: {}", a.to_string_lossy()))?
                    .to_string(),
            ),
            PathBuf::from(m),
        ),
        _ => bail!("give [ARCHIVE] MOUNTPOINT"),
    };
    if !mountpoint.is_dir() {
        bail!("mount point {}: not a directory", mountpoint.display());
    }
    let mountpoint = fuse::mount_point(&mountpoint)?;
    let (repo, _lock, mut warnings) = access::open_locked(global, "mount")?;
    let source = repo.blob_source();
    let report: Report = Arc::new(|m| eprintln!("proxborg: {m}"));
    let (view, what) = match archive {
        Some(name) => {
            let (_, manifest) = repo.find_archive(&name)?;
            let tree = load_tree(&source, &manifest, &report)
                .map_err(|e| anyhow!("archive {name}: {e}"))?;
            let what = format!("archive {name}");
            (
                View::Single(Box::new(Archive::with_tree(name, manifest, tree))),
                what,
            )
        }
        None => {
            let (list, damaged) = repo.archives()?;
            for d in &damaged {
                warn(format!("skipping damaged archive file: {d}"));
            }
            warnings += damaged.len() as u64;
            let mut seen = HashSet::new();
            let archives: Vec<Archive> = list
                .into_iter()
                .map(|(id, m)| {
                    // Names are unique but for rare races; keep every archive reachable.
                    let mut dir = m.name.clone();
                    if !seen.insert(dir.clone()) {
                        dir = format!("{}.{}", m.name, &id.to_string()[..8]);
                        seen.insert(dir.clone());
                    }
                    Archive::new(dir, m)
                })
                .collect();
            let what = format!("{} archives", archives.len());
            (View::Repository(archives), what)
        }
    };
    let fs = ArchiveFs::new(source, view, report);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("proxborg".into()),
        // fuser's own mount(2) path drops the subtype: `proxborg umount` knows its mounts
        // by this source name.
        fuser::MountOption::Subtype("proxborg".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    config.n_threads = Some(2);
    let session = fuser::Session::new(fs, &mountpoint, &config)
        .with_context(|| format!("mounting at {}", mountpoint.display()))?;
    unmount_on_signals(mountpoint.clone())?;
    eprintln!(
        "proxborg: {what} mounted read-only at {0}; `proxborg umount {0}` (or Ctrl-C) ends it",
        mountpoint.display()
    );
    session
        .run()
        .with_context(|| format!("serving {}", mountpoint.display()))?;
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}

/// SIGINT, SIGTERM and SIGHUP unmount (the session then ends as after `umount`). A busy mount
/// stays, with a message; the next signal tries again.
fn unmount_on_signals(mountpoint: PathBuf) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    std::thread::spawn(move || {
        for _ in signals.forever() {
            match fuse::unmount(&mountpoint) {
                Ok(()) => eprintln!("proxborg: unmounting {}", mountpoint.display()),
                Err(e) => eprintln!("proxborg: error: {e}; signal again to retry"),
            }
        }
    });
    Ok(())
}
