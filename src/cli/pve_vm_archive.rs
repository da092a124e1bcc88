//! `proxborg pve-vm-archive NAME --vmid ID --config FILE [--firewall FILE]
//! --drive drive-scsi0=PATH[,size=BYTES][,dirty=FILE] ... [--previous ARCHIVE]` (hidden): the
//! PVE backup-provider plugin's VM backup step (packaging/perl, `file-handle` mechanism). Stores
//! the drives as the VM archive `proxborg ID` makes from a VMA. A drive with `dirty=FILE` (one
//! `OFFSET LENGTH` line per dirty region, decimal bytes; an empty file: nothing changed) reads
//! only the 4 MiB chunks those regions touch and takes the rest from `--previous`. Run as root.

use super::{access, warn, Global, Outcome};
use crate::backup::{self, Event, Sink, VmDrive, VmImagesRequest};
use crate::item::Extent;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the new archive
    name: String,
    #[arg(long, value_name = "VMID")]
    vmid: String,
    /// The qemu-server.conf vzdump assembled
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The firewall config (empty or absent: none)
    #[arg(long, value_name = "FILE")]
    firewall: Option<PathBuf>,
    /// A drive: DEVICE=PATH[,size=BYTES][,dirty=FILE]
    #[arg(long, value_name = "SPEC")]
    drive: Vec<String>,
    /// The archive the dirty regions are relative to
    #[arg(long, value_name = "ARCHIVE")]
    previous: Option<String>,
    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let (vmid, qemu_conf, qemu_fw) = super::pve_container_archive::guest_inputs(
        &args.vmid,
        &args.config,
        args.firewall.as_ref(),
    )?;
    let read = super::pve_container_archive::read_text;
    let mut drives = Vec::new();
    for spec in &args.drive {
        let (name, path, size, dirty) =
            parse_drive(spec).with_context(|| format!("--drive {spec}"))?;
        let dirty = match dirty {
            Some(f) => Some(parse_regions(&read(&f)?).with_context(|| f.display().to_string())?),
            None => None,
        };
        drives.push(VmDrive {
            name,
            path,
            size,
            dirty,
        });
    }
    let (repo, _lock, damaged) = access::open_locked(global, "pve-vm-archive")?;
    let conf = access::settings()?;
    let request = VmImagesRequest {
        name: args.name.clone(),
        vmid,
        qemu_conf,
        qemu_fw,
        drives,
        previous: args.previous.clone(),
        compression: conf.compression,
    };
    let created = backup::vm_from_images(&repo, request, &Warnings)?;
    let m = &created.manifest;
    if args.json {
        let out = serde_json::json!({ "archive": m.name, "id": created.id.to_hex(),
            "size": m.stats.original_size, "added": m.stats.added_size,
            "drives": m.metadata.get("drives"), "warnings": created.warnings });
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(if created.warnings + damaged > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}

type DriveSpec = (String, PathBuf, Option<u64>, Option<PathBuf>);

/// `drive-scsi0=/proc/123/fd/7,size=67108864,dirty=/run/x` (a path may not contain `,`).
fn parse_drive(spec: &str) -> Result<DriveSpec> {
    let (name, rest) = spec.split_once('=').context("expected DEVICE=PATH")?;
    if !name.starts_with("drive-")
        || !name[6..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        || name.len() == 6
    {
        bail!("device name {name:?} is not drive-<name>");
    }
    let mut parts = rest.split(',');
    let path = PathBuf::from(parts.next().unwrap_or_default());
    if path.as_os_str().is_empty() {
        bail!("no path");
    }
    let (mut size, mut dirty) = (None, None);
    for p in parts {
        match p.split_once('=') {
            Some(("size", v)) => size = Some(v.parse().with_context(|| format!("size {v:?}"))?),
            Some(("dirty", v)) => dirty = Some(PathBuf::from(v)),
            _ => bail!("unknown option {p:?}"),
        }
    }
    Ok((name.to_string(), path, size, dirty))
}

/// One `OFFSET LENGTH` line per region.
fn parse_regions(text: &str) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut w = line.split_whitespace().map(str::parse::<u64>);
        match (w.next(), w.next(), w.next()) {
            (Some(Ok(offset)), Some(Ok(len)), None) => out.push(Extent { offset, len }),
            _ => bail!("line {}: expected OFFSET LENGTH, got {line:?}", n + 1),
        }
    }
    Ok(out)
}

struct Warnings;

impl Sink for Warnings {
    fn event(&self, event: Event<'_>) {
        if let Event::Warning { message, .. } = event {
            warn(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_specs_and_region_lists_parse() {
        let (n, p, s, d) = parse_drive("drive-scsi0=/proc/1/fd/7,size=4096,dirty=/run/d").unwrap();
        assert_eq!(
            (n.as_str(), p.to_str()),
            ("drive-scsi0", Some("/proc/1/fd/7"))
        );
        assert_eq!(
            (s, d.as_deref()),
            (Some(4096), Some(std::path::Path::new("/run/d")))
        );
        assert!(parse_drive("scsi0=/x").is_err());
        assert!(parse_drive("drive-scsi0=/x,bogus=1").is_err());
        assert!(parse_drive("drive-scsi0=").is_err());
        let r = parse_regions("0 4096\n\n 8388608 10 \n").unwrap();
        assert_eq!(
            r,
            vec![
                Extent {
                    offset: 0,
                    len: 4096
                },
                Extent {
                    offset: 8388608,
                    len: 10
                }
            ]
        );
        assert!(parse_regions("1 2 3\n").is_err());
        assert!(parse_regions("-1 2\n").is_err());
    }
}
