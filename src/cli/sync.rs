//! `proxborg sync SRC DST [ARCHIVE|--series S|--all]`: copy archives between repositories
//! (`crate::sync`). DST is opened like `create` opens its repository (its passphrase,
//! a shared lock); SRC with the `PROXBORG_SRC_*` secrets, read only. `--bwlimit` holds the
//! bytes read from SRC to the rate, and the bytes written to DST to it too (two buckets: one
//! of the two is usually the network, and its use is then the rate, not half of it).

use super::{access, warn, Global, Outcome};
use crate::repo::backend::throttle::{Limiter, Throttled};
use crate::repo::location;
use crate::sync::{self, Event, Selection};
use anyhow::{Context, Result};
use bytesize::ByteSize;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").args(["archive", "series", "all"])))]
pub struct Args {
    /// The repository to copy from (a directory or ssh:// URL)
    src: PathBuf,
    /// The repository to copy to; make it with `init --chunker-params-from SRC`
    dst: PathBuf,
    /// Copy only this archive
    archive: Option<String>,
    /// Copy only the archives of this series (as prune groups them, e.g. lxc-100)
    #[arg(long, value_name = "SERIES")]
    series: Option<String>,
    /// Copy every archive (the default)
    #[arg(long)]
    all: bool,
    /// Show what would be copied, write nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let selection = match (&args.archive, &args.series) {
        (Some(a), _) => Selection::Archive(a.clone()),
        (None, Some(s)) => Selection::Series(s.clone()),
        (None, None) => Selection::All,
    };
    let src_loc = location::parse(&args.src)?;
    let dst_loc = location::parse(&args.dst)?;
    access::require_existing(&src_loc)?;
    access::require_existing(&dst_loc)?;
    let (mut src_backend, mut dst_backend) = (
        access::raw_backend(&src_loc)?,
        access::raw_backend(&dst_loc)?,
    );
    if let Some(kib) = access::bwlimit(global)? {
        src_backend = Throttled::wrap(src_backend, Limiter::new(kib), true);
        dst_backend = Throttled::wrap(dst_backend, Limiter::new(kib), false);
    }
    let (src, mut warnings) = access::open_other(src_backend, &src_loc)?;
    // A dry run takes no lock: it writes nothing at all to DST.
    let (mut dst, _lock, damaged) = if args.dry_run {
        let repo = access::unlock(dst_backend, &dst_loc, &access::EnvCredentials)?;
        let (repo, damaged) = access::load_index(repo, &dst_loc)?;
        (repo, None, damaged)
    } else {
        let (repo, lock, damaged) = access::open_locked_at(global, dst_backend, &dst_loc, "sync")?;
        (repo, Some(lock), damaged)
    };
    warnings += damaged;
    sync::check_compatible(&src, &dst)?;
    let src_list = src
        .list_archives()
        .with_context(|| format!("repository {src_loc}"))?;
    let dst_list = dst
        .list_archives()
        .with_context(|| format!("repository {dst_loc}"))?;
    for d in &src_list.damaged {
        warn(format!("{src_loc}: skipping damaged archive file: {d}"));
        warnings += 1;
    }
    let plan = sync::plan::choose(&src_list.archives, &dst_list.archives, &selection)
        .map_err(sync::SyncError::Select)?;
    for c in &plan.conflicts {
        warn(c);
        warnings += 1;
    }
    let verb = if args.dry_run { "would copy" } else { "copied" };
    let report = sync::run(&src, &mut dst, &plan, args.dry_run, &mut |e| {
        if args.json {
            return;
        }
        match e {
            Event::Copied { name, blobs, bytes } => {
                eprintln!("{verb} {name} ({blobs} new blobs, {})", ByteSize(bytes))
            }
            Event::Skipped { name } => eprintln!("skipped {name} (already in {dst_loc})"),
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "{}{} archives copied, {} skipped; {} blobs, {} ({} stored)",
            if args.dry_run { "dry run: " } else { "" },
            report.archives_copied,
            report.archives_skipped,
            report.blobs_copied,
            ByteSize(report.bytes_copied),
            ByteSize(report.bytes_stored),
        );
    }
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}
