//! `proxborg check`: exit 0 when healthy, 2 with one line per problem otherwise.
//! `--repair` (`repo::repair`): rebuild the index, move damaged packs and archive files aside,
//! rewrite the archives that lost blobs; exit 0 when nothing was lost, 1 when files were.
//! `--dry-run` prints what it would do and changes nothing.

use super::progress::Progress;
use super::{access, Global, Outcome};
use crate::repo::check::{check, CheckOptions};
use crate::repo::repair::{repair, RepairOptions, RepairReport};
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
    /// Repair: rebuild the index from the packs, move damaged packs and archive files aside
    /// (`*.bad`), rewrite archives that lost blobs (their damaged files are marked)
    #[arg(long, conflicts_with_all = ["verify_data", "percent"])]
    repair: bool,
    /// With --repair: say what would be done, change nothing
    #[arg(long, short = 'n', requires = "repair")]
    dry_run: bool,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("{s:?} is not a percentage in (0, 100]")),
    }
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    if args.repair {
        return run_repair(global, &args);
    }
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
    if report.damaged_files > 0 || report.set_aside > 0 {
        eprintln!(
            "{} files recorded as damaged by check --repair (list marks them), {} damaged objects set aside (*.bad)",
            report.damaged_files, report.set_aside
        );
    }
    eprintln!("repository is healthy");
    Ok(Outcome::Success)
}

fn run_repair(global: &Global, args: &Args) -> Result<Outcome> {
    let (mut repo, _) = access::open(global)?;
    let progress = Progress::new(args.progress);
    let opts = RepairOptions {
        dry_run: args.dry_run,
        lock_wait: access::lock_wait(global)?,
    };
    let report = repair(&mut repo, &opts, &mut |m| super::warn(m), &mut |stage| {
        let s = stage.to_string();
        progress.set(|| s)
    })?;
    // What a finished repair leaves must pass check (the data was verified while repairing).
    let after = if args.dry_run {
        None
    } else {
        progress.set(|| "checking the result".to_string());
        Some(check(&repo, &CheckOptions::default(), &mut |_| {})?)
    };
    progress.finish();
    if args.json {
        let json = serde_json::json!({ "repair": report, "check_after": after });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for line in repair_lines(&report) {
            println!("{line}");
        }
        if let Some(after) = &after {
            for p in &after.problems {
                println!("still: {p}");
            }
        }
    }
    if let Some(after) = &after {
        if !after.is_healthy() {
            bail!(
                "check --repair left {} problems (see above)",
                after.problems.len()
            );
        }
    }
    let verb = if args.dry_run { "would be" } else { "was" };
    if !report.changes() {
        eprintln!("nothing to repair: {} packs read", report.packs_scanned);
        return Ok(Outcome::Success);
    }
    if report.data_lost() {
        super::warn(format!(
            "the repository {verb} repaired, but data is lost: the files listed above cannot be restored (a new backup of the same data stores their content again)"
        ));
        return Ok(Outcome::Warnings);
    }
    eprintln!("the repository {verb} repaired; nothing was lost");
    Ok(Outcome::Success)
}

/// One line per thing done (or, dry, to be done), naming the object.
pub fn repair_lines(r: &RepairReport) -> Vec<String> {
    let would = |done: &str, dry: &str| {
        if r.dry_run {
            dry.to_string()
        } else {
            done.to_string()
        }
    };
    let mut out = Vec::new();
    for d in &r.damaged_index_files {
        out.push(format!("damaged index file: {d}"));
    }
    for p in &r.packs_missing {
        out.push(format!(
            "{}: {}; {} blobs lost{}",
            p.key,
            p.why,
            p.blobs_lost,
            used_by(&p.used_by)
        ));
    }
    if r.index_rebuilt {
        out.push(format!(
            "index {} from {} packs ({} not indexed before, {} damaged, {} missing)",
            would("rebuilt", "would be rebuilt"),
            r.packs_scanned,
            r.packs_unindexed.len(),
            r.packs_set_aside.len(),
            r.packs_missing.len()
        ));
    }
    for p in &r.packs_set_aside {
        out.push(format!(
            "{}: damaged ({}): {} {}.bad; {} readable blobs {}, {} lost{}",
            p.key,
            p.why,
            would("moved to", "would move to"),
            p.key,
            p.blobs_salvaged,
            would("salvaged", "to salvage"),
            p.blobs_lost,
            used_by(&p.used_by)
        ));
    }
    for a in &r.archives {
        let mut line = format!(
            "archive {:?}: {}{}",
            a.name,
            if r.dry_run { "would be " } else { "" },
            a.action
        );
        if a.damaged_count > 0 {
            line.push_str(&format!("; {} damaged files", a.damaged_count));
        }
        if a.lost_items > 0 {
            line.push_str(&format!("; {} items lost", a.lost_items));
        }
        if let Some(p) = &a.problem {
            line.push_str(&format!(" ({p})"));
        }
        out.push(line);
        for f in &a.damaged_files {
            out.push(format!("archive {:?}: damaged file {f}", a.name));
        }
    }
    for a in &r.archives_set_aside {
        out.push(format!(
            "{a}: unreadable archive file {}",
            would("moved aside (.bad)", "would be moved aside (.bad)")
        ));
    }
    out
}

fn used_by(archives: &[String]) -> String {
    if archives.is_empty() {
        String::new()
    } else {
        format!("; lost blobs used by archives: {}", archives.join(", "))
    }
}
