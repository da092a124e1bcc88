//! `proxborg prune`: apply retention rules (see `retention`) to each series of archives and
//! delete the archive files of those no rule keeps. Blobs are freed by `compact`. Protected
//! archives are always kept and do not count against the rules (`retention`).

use super::{access, Global, Outcome};
use crate::repo::ArchiveEntry;
use crate::retention::{self, Rules};
use anyhow::{bail, Result};

#[derive(clap::Args, Clone, Default)]
pub struct KeepArgs {
    /// Keep every archive newer than this interval (e.g. 2d, 12H, 3w, 6m, 1y)
    #[arg(long, value_name = "INTERVAL", value_parser = retention::parse_within)]
    pub keep_within: Option<jiff::SignedDuration>,
    /// Keep the newest N archives
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    #[arg(long, value_name = "N")]
    pub keep_minutely: Option<usize>,
    /// Keep the newest archive of each of the last N hours
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<usize>,
    /// Keep the newest archive of each of the last N days
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<usize>,
    /// Keep the newest archive of each of the last N ISO weeks
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<usize>,
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<usize>,
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<usize>,
}

impl KeepArgs {
    pub fn rules(&self) -> Rules {
        Rules {
            within: self.keep_within,
            last: self.keep_last,
            minutely: self.keep_minutely,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    keep: KeepArgs,
    /// Only archives whose name starts with PREFIX, as one series
    #[arg(long, value_name = "PREFIX", conflicts_with = "glob")]
    prefix: Option<String>,
    /// Only archives whose name matches GLOB, as one series
    #[arg(long, value_name = "GLOB")]
    glob: Option<String>,
    /// Decide and show, delete nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// List every archive with its decision and the rule that kept it
    #[arg(long)]
    list: bool,
    /// Print decisions as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let rules = args.keep.rules();
    if rules.is_empty() {
        bail!("no --keep-* rule given: prune would delete every archive");
    }
    let (repo, _lock, warnings) = access::open_locked(global, "prune")?;
    if repo.append_only() && !args.dry_run {
        bail!(crate::repo::RepoError::AppendOnly("prune"));
    }
    let list = repo.list_archives()?;
    if !list.damaged.is_empty() {
        bail!(
            "{} damaged archive files: run check before pruning",
            list.damaged.len()
        );
    }
    if let Some(msg) = list.rolled_back.values().next() {
        bail!("{msg}; nothing pruned");
    }
    let archives = &list.archives;
    let selected: Vec<&ArchiveEntry> = archives
        .iter()
        .filter(|(_, m)| match (&args.prefix, &args.glob) {
            (Some(p), _) => m.name.starts_with(p.as_str()),
            (_, Some(g)) => crate::item::pattern::glob_match(g.as_bytes(), m.name.as_bytes()),
            _ => true,
        })
        .collect();
    let decisions = retention::decide_archives(
        &selected,
        &rules,
        args.prefix.is_some() || args.glob.is_some(),
        jiff::Timestamp::now(),
        &jiff::tz::TimeZone::system(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&decisions)?);
    }
    let mut deleted = 0;
    for (d, entry) in decisions.iter().zip(&selected) {
        if args.list && !args.json {
            match &d.rule {
                Some(r) => println!("Keeping archive (rule: {r}): {:<40} {}", d.name, d.start),
                None => println!(
                    "{} archive:{:<16} {:<40} {}",
                    if args.dry_run {
                        "Would prune"
                    } else {
                        "Pruning"
                    },
                    "",
                    d.name,
                    d.start
                ),
            }
        }
        if entry.1.protected && !args.list && !args.json {
            eprintln!("Keeping protected archive {}", d.name);
        }
        if !d.keep && !args.dry_run {
            repo.delete_archive(entry, &list)?;
            deleted += 1;
        }
    }
    if !args.json {
        let protected = selected.iter().filter(|(_, m)| m.protected).count();
        eprintln!(
            "{} archives considered, {} kept{}, {} {}",
            decisions.len(),
            decisions.iter().filter(|d| d.keep).count(),
            if protected > 0 {
                format!(" ({protected} protected)")
            } else {
                String::new()
            },
            if args.dry_run {
                decisions.iter().filter(|d| !d.keep).count()
            } else {
                deleted
            },
            if args.dry_run {
                "would be pruned"
            } else {
                "pruned (run compact to free space)"
            }
        );
    }
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}
