//! `proxborg compact`: delete packs no archive needs and repack mostly-empty ones. Safe while
//! backups run (the rule is in `repo::compact`).

use super::{access, Global, Outcome};
use crate::repo::compact::{compact, CompactOptions};
use anyhow::Result;
use bytesize::ByteSize;

#[derive(clap::Args)]
pub struct Args {
    /// Repack a pack once at least this percentage of it is unreferenced
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    threshold: f64,
    /// Show what would be freed, change nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let (repo, warnings) = access::open(global)?;
    let opts = CompactOptions {
        threshold_percent: args.threshold,
        lock_wait: access::lock_wait(global)?,
        dry_run: args.dry_run,
    };
    let started = std::time::Instant::now();
    let r = compact(&repo, &opts, &mut |m| super::warn(m))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        eprintln!(
            "{}{} of {} packs deleted ({} repacked into {} new, {} kept for archives written meanwhile); {} freed of {} in {:.1} s",
            if args.dry_run { "dry run: " } else { "" },
            r.packs_deleted,
            r.packs_before,
            r.packs_repacked,
            r.packs_written,
            r.packs_kept_for_new_archives,
            ByteSize(r.bytes_freed().max(0) as u64),
            ByteSize(r.bytes_before),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}
