//! `proxborg create NAME SOURCE`: a directory tree (its contents become the archive root, as
//! `tar -C DIR .` would), a regular file or block device (one entry, read as a stream), or
//! `-` (stdin, one entry named by `--stdin-name`).

use super::progress::{progress_line, Progress};
use super::{access, warn, Global, Outcome};
use crate::backup::{self, CacheOptions, CreateRequest, CreateSource, Event, Sink};
use crate::files_cache::Mode as FilesCacheMode;
use crate::pve::idmap::{IdMap, IdMapEntry};
use crate::repo::{Compression, Manifest, ObjectId};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the new archive
    name: String,
    /// Directory, regular file, block device, or - for stdin
    source: PathBuf,
    /// Entry name for a stdin source
    #[arg(long, default_value = "stdin", value_name = "NAME")]
    stdin_name: String,
    /// Leave out paths matching PATTERN (tar-style glob; a leading / anchors at the root)
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Do not descend into other filesystems (mount points are kept as empty directories)
    #[arg(long)]
    one_file_system: bool,
    /// The source is an unprivileged container's files: record ids as the container sees
    /// them through PVE's default map (host 100000+N is N; others 65534)
    #[arg(long, conflicts_with = "idmap")]
    unprivileged: bool,
    /// Record ids through this map instead, in lxc.idmap syntax (`u 0 100000 65536`; repeat
    /// for each line, uid and gid)
    #[arg(long, value_name = "MAP")]
    idmap: Vec<String>,
    /// Compression for this archive's new blobs: none, zstd,N or auto,zstd,N
    #[arg(long)]
    compression: Option<Compression>,
    /// Which metadata marks a file unchanged so it is not read again: ctime,size,inode,
    /// mtime,size, or off
    #[arg(long, value_name = "MODE", default_value = "ctime,size,inode")]
    files_cache: FilesCacheMode,
    /// Forget files not seen in this many backups
    #[arg(long, value_name = "RUNS", default_value_t = 20)]
    files_cache_ttl: u32,
    /// Show progress (on a terminal only)
    #[arg(long)]
    progress: bool,
    /// Print the archive's statistics when done
    #[arg(long)]
    stats: bool,
    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let (repo, _lock, damaged) = access::open_for_backup(global, "create")?;
    let conf = access::settings()?;
    let source = if args.source.as_os_str() == "-" {
        CreateSource::Stream {
            name: args.stdin_name.clone(),
            reader: Box::new(std::io::stdin()),
        }
    } else {
        CreateSource::Path(args.source.clone())
    };
    let request = CreateRequest {
        name: args.name.clone(),
        source,
        excludes: conf.excludes.iter().chain(&args.exclude).cloned().collect(),
        one_file_system: args.one_file_system,
        idmap: idmap_of(&args)?,
        compression: args.compression.or(conf.compression),
        files_cache: CacheOptions {
            mode: args.files_cache,
            ttl: args.files_cache_ttl,
        },
    };
    let console = Console::new(args.progress);
    let created = backup::create(&repo, request, &console)?;
    console.finish();
    report(&args, &created.id, &created.manifest)?;
    Ok(if created.warnings + damaged > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}

/// Warnings as they come and a progress line on a terminal.
struct Console(Progress);

impl Console {
    fn new(progress: bool) -> Self {
        Console(Progress::new(progress))
    }
    fn finish(&self) {
        self.0.finish();
    }
}

impl Sink for Console {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Warning { message, .. } => warn(message),
            Event::Progress { stats, .. } => self.0.set(|| progress_line(stats)),
            _ => {}
        }
    }
}

fn idmap_of(args: &Args) -> Result<Option<IdMap>> {
    if args.unprivileged {
        return Ok(Some(IdMap::default_unprivileged()));
    }
    if args.idmap.is_empty() {
        return Ok(None);
    }
    let entries = args
        .idmap
        .iter()
        .map(|l| {
            IdMapEntry::parse(l).ok_or_else(|| {
                anyhow::anyhow!("--idmap {l:?}: expected `u|g CT_START HOST_START COUNT`")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    IdMap::new(entries)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--idmap: {e}"))
}

fn report(args: &Args, id: &ObjectId, m: &Manifest) -> Result<()> {
    if args.json {
        let (sent, received) = crate::repo::backend::traffic::totals();
        let out = serde_json::json!({
            "archive": { "name": m.name, "id": id.to_hex(), "start": m.start, "end": m.end,
                         "metadata": m.metadata, "stats": m.stats },
            "transferred": { "sent": sent, "received": received },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if args.stats {
        let s = &m.stats;
        eprintln!("Archive:        {}", m.name);
        eprintln!("Items:          {} ({} files)", s.items, s.files);
        eprintln!("Original size:  {}", bytesize::ByteSize(s.original_size));
        eprintln!("Chunks:         {} ({} new)", s.chunks, s.new_chunks);
        eprintln!("Added to repo:  {}", bytesize::ByteSize(s.added_size));
        eprintln!("Warnings:       {}", s.warnings);
        let (sent, received) = crate::repo::backend::traffic::totals();
        if sent + received > 0 {
            eprintln!(
                "Transferred:    {} sent, {} received",
                bytesize::ByteSize(sent),
                bytesize::ByteSize(received)
            );
        }
    }
    Ok(())
}
