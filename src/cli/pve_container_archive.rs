//! `proxborg pve-container-archive NAME --vmid ID --directory DIR --source ./ ...` (hidden):
//! the PVE backup-provider plugin's backup step (packaging/perl). Stores DIR's sources as the
//! container archive `proxborg ID:` would make, with the given pct.conf/pct.fw texts; owners
//! go through the config's id map. Run as host root: it reads the snapshot vzdump mounted.

use super::{access, warn, Global, Outcome};
use crate::backup::{self, CacheOptions, ContainerDirRequest, Event, Sink};
use crate::files_cache::Mode as FilesCacheMode;
use crate::pve::Vmid;
use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the new archive
    name: String,
    #[arg(long, value_name = "VMID")]
    vmid: String,
    /// The composed snapshot tree (vzdump's /mnt/vzsnap0)
    #[arg(long, value_name = "DIR")]
    directory: PathBuf,
    /// A source below DIR as vzdump names it (`./`, `./srv/data`); rootfs first
    #[arg(long, value_name = "SOURCE", required = true)]
    source: Vec<String>,
    /// The pct.conf vzdump assembled
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The firewall config (empty or absent: none)
    #[arg(long, value_name = "FILE")]
    firewall: Option<PathBuf>,
    /// The job's exclude-path patterns (PVE glob syntax)
    #[arg(long, value_name = "PATTERN", allow_hyphen_values = true)]
    exclude: Vec<String>,
    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,
}

/// What both plugin subcommands start from: the VMID, and the guest config and firewall
/// file vzdump assembled (read whole: they are small text files PVE wrote).
pub(super) fn guest_inputs(
    vmid: &str,
    config: &PathBuf,
    firewall: Option<&PathBuf>,
) -> Result<(Vmid, String, Option<String>)> {
    let vmid = Vmid::parse(vmid).ok_or_else(|| anyhow!("invalid VMID {vmid:?}"))?;
    let conf = read_text(config)?;
    let fw = firewall.map(read_text).transpose()?;
    Ok((vmid, conf, fw))
}

pub(super) fn read_text(p: &PathBuf) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let (vmid, pct_conf, pct_fw) = guest_inputs(&args.vmid, &args.config, args.firewall.as_ref())?;
    let pct_fw = pct_fw.unwrap_or_default();
    let (repo, _lock, damaged) = access::open_locked(global, "pve-container-archive")?;
    let conf = access::settings()?;
    let request = ContainerDirRequest {
        name: args.name.clone(),
        vmid,
        directory: args.directory.clone(),
        sources: args.source.clone(),
        pct_conf,
        pct_fw,
        excludes: conf.excludes.iter().chain(&args.exclude).cloned().collect(),
        compression: conf.compression,
        files_cache: CacheOptions {
            mode: FilesCacheMode::default(),
            ttl: 20,
        },
    };
    let created = backup::container_from_directory(&repo, request, &Warnings)?;
    let m = &created.manifest;
    if args.json {
        let out = serde_json::json!({ "archive": m.name, "id": created.id.to_hex(),
            "size": m.stats.original_size, "added": m.stats.added_size,
            "warnings": created.warnings });
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(if created.warnings + damaged > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}

struct Warnings;

impl Sink for Warnings {
    fn event(&self, event: Event<'_>) {
        if let Event::Warning { message, .. } = event {
            warn(message);
        }
    }
}
