//! `proxborg info [ARCHIVE]`: sizes and counts. For an archive: original size, compressed
//! size (its distinct blobs as stored) and deduplicated size (stored bytes no other archive
//! shares, i.e. what deleting it and compacting would free).

use super::{access, Global, Outcome};
use crate::repo::item_stream::ItemStreamReader;
use crate::repo::{ChunkId, Manifest, Repository};
use anyhow::Result;
use bytesize::ByteSize;
use std::collections::HashSet;

#[derive(clap::Args)]
pub struct Args {
    /// Archive to describe (default: the repository)
    archive: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let (repo, warnings) = access::open(global)?;
    let list = repo.list_archives()?;
    let (archives, damaged) = (list.archives, list.damaged);
    for d in &damaged {
        super::warn(format!("skipping damaged archive file: {d}"));
    }
    for msg in list.rolled_back.values() {
        super::warn(msg);
    }
    let value = match &args.archive {
        None => repo_info(&repo, &archives),
        Some(name) => archive_info(&repo, &archives, name)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_human(&value, "");
    }
    Ok(
        if warnings + (damaged.len() + list.rolled_back.len()) as u64 > 0 {
            Outcome::Warnings
        } else {
            Outcome::Success
        },
    )
}

fn repo_info(repo: &Repository, archives: &[(ChunkId, Manifest)]) -> serde_json::Value {
    let index = repo.index();
    let (mut stored, mut raw) = (0u64, 0u64);
    for (_, loc) in index.blobs() {
        stored += loc.length as u64;
        raw += loc.raw_len as u64;
    }
    let original: u64 = archives.iter().map(|(_, m)| m.stats.original_size).sum();
    let c = repo.config();
    serde_json::json!({
        "repository": repo.location(),
        "id": c.id,
        "format": c.format,
        "encryption": c.encryption.to_string(),
        "compression": c.compression.to_string(),
        "append_only": c.append_only,
        "archives": archives.len(),
        "packs": index.packs().len(),
        "blobs": index.blob_count(),
        "original_size": original,
        "deduplicated_size": raw,
        "stored_size": stored,
    })
}

fn archive_info(
    repo: &Repository,
    archives: &[(ChunkId, Manifest)],
    name: &str,
) -> Result<serde_json::Value> {
    let Some((id, manifest)) = archives.iter().find(|(_, m)| m.name == name) else {
        anyhow::bail!("archive {name:?} not found");
    };
    let mine = blob_set(repo, manifest)?;
    let mut unique = mine.clone();
    for (other_id, other) in archives {
        if other_id != id && !unique.is_empty() {
            for b in blob_set(repo, other)? {
                unique.remove(&b);
            }
        }
    }
    let stored = |set: &HashSet<ChunkId>| -> u64 {
        set.iter()
            .filter_map(|b| repo.index().get(b))
            .map(|(_, l)| l.length as u64)
            .sum()
    };
    Ok(serde_json::json!({
        "name": manifest.name,
        "id": id.to_hex(),
        "start": manifest.start,
        "end": manifest.end,
        "hostname": manifest.hostname,
        "tool_version": manifest.tool_version,
        "metadata": manifest.metadata,
        "protected": manifest.protected,
        "notes": manifest.notes,
        "items": manifest.stats.items,
        "files": manifest.stats.files,
        "chunks": manifest.stats.chunks,
        "original_size": manifest.stats.original_size,
        "compressed_size": stored(&mine),
        "deduplicated_size": stored(&unique),
        "added_size": manifest.stats.added_size,
        "warnings_at_creation": manifest.stats.warnings,
    }))
}

/// Every blob an archive references: its item stream's and its files'.
fn blob_set(repo: &Repository, m: &Manifest) -> Result<HashSet<ChunkId>> {
    let mut set: HashSet<ChunkId> = m.item_stream.iter().copied().collect();
    let source = repo.blob_source();
    for item in ItemStreamReader::new(m.item_stream.clone(), |id| source.read_blob(id)) {
        set.extend(item?.chunks.iter().map(|c| c.id));
    }
    Ok(set)
}

fn print_human(v: &serde_json::Value, indent: &str) {
    let Some(obj) = v.as_object() else { return };
    for (k, val) in obj {
        let label = k.replace('_', " ");
        match val {
            serde_json::Value::Number(n) if k.ends_with("size") => {
                println!("{indent}{label:<24} {}", ByteSize(n.as_u64().unwrap_or(0)))
            }
            serde_json::Value::Object(_) => {
                println!("{indent}{label}:");
                print_human(val, &format!("{indent}  "));
            }
            serde_json::Value::Array(drives) if k == "drives" => {
                println!("{indent}drives:");
                for d in drives {
                    let bytes = |f: &str| ByteSize(d[f].as_u64().unwrap_or(0));
                    println!(
                        "{indent}  {:<22} size {}, allocated {}, read {}, new {}",
                        d["name"].as_str().unwrap_or("?"),
                        bytes("size"),
                        bytes("allocated"),
                        bytes("read"),
                        bytes("new")
                    );
                }
            }
            // Multi-line strings (notes) continue under the value column.
            serde_json::Value::String(s) => println!(
                "{indent}{label:<24} {}",
                s.replace('\n', &format!("\n{indent}{:<24} ", ""))
            ),
            other => println!("{indent}{label:<24} {other}"),
        }
    }
}
