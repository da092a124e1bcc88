//! `proxborg check`: exit 0 when healthy, 2 with one line per problem otherwise.

use super::progress::Progress;
use super::{access, Global, Outcome};
use crate::repo::check::{check, CheckOptions};
use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Also read every pack (or --percent of them) and re-hash every blob
    #[arg(long)]
    verify_data: bool,
    /// With --verify-data: only this percentage of the packs, chosen at random
    #[arg(long, value_name = "N", value_parser = parse_percent)]
    percent: Option<f64>,
    /// Show progress (on a terminal only)
    #[arg(long)]
    progress: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("{s:?} is not a percentage in (0, 100]")),
    }
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let (repo, _) = access::open(global)?;
    let progress = Progress::new(args.progress);
    let opts = CheckOptions {
        verify_data: args.verify_data || args.percent.is_some(),
        percent: args.percent,
    };
    let report = check(&repo, &opts, &mut |stage| {
        let s = stage.to_string();
        progress.set(|| s)
    })?;
    progress.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!("{p}");
        }
        eprintln!(
            "{} index files, {} packs ({} unreferenced), {} archive files ({} protected archives, {} superseded files), {} items checked{}",
            report.index_files,
            report.packs,
            report.unreferenced_packs,
            report.archives,
            report.protected_archives,
            report.superseded_archive_files,
            report.items,
            if opts.verify_data {
                format!(
                    "; {} packs, {} blobs, {} re-hashed",
                    report.packs_verified,
                    report.blobs_verified,
                    bytesize::ByteSize(report.bytes_verified)
                )
            } else {
                String::new()
            }
        );
    }
    if !report.is_healthy() {
        bail!("check found {} problems", report.problems.len());
    }
    eprintln!("repository is healthy");
    Ok(Outcome::Success)
}
