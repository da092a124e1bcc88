//! `proxborg list [ARCHIVE]`: the archives, or one archive's entries like `tar tv`.
//! `--json`: archives as one JSON array; entries as JSON Lines (one object per entry), so a
//! listing of millions of entries streams.
//! A file whose content blobs are no longer in the repository (see `check --repair`) is
//! marked: `[DAMAGED: content lost]` after its line, `"damaged": true` in JSON.

use super::{access, Global, Outcome};
use crate::item::filter::Selection;
use crate::item::{Item, Kind};
use crate::repo::item_stream::ItemStreamReader;
use anyhow::Result;
use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    /// Archive whose entries to list
    archive: Option<String>,
    /// Only these paths (and what is below them)
    #[arg(requires = "archive")]
    paths: Vec<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    match list(global, args) {
        // `proxborg list ARCHIVE | head` is not an error.
        Err(e) if is_broken_pipe(&e) => Ok(Outcome::Success),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn list(global: &Global, args: Args) -> Result<Outcome> {
    let (repo, mut warnings) = access::open(global)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let Some(name) = &args.archive else {
        let list = repo.list_archives()?;
        let (archives, damaged) = (&list.archives, &list.damaged);
        for d in damaged {
            super::warn(format!("skipping damaged archive file: {d}"));
        }
        for msg in list.rolled_back.values() {
            super::warn(msg);
        }
        warnings += (damaged.len() + list.rolled_back.len()) as u64;
        if args.json {
            let list: Vec<_> = archives
                .iter()
                .map(|(id, m)| {
                    serde_json::json!({ "name": m.name, "id": id.to_hex(), "start": m.start,
                        "end": m.end, "hostname": m.hostname, "metadata": m.metadata,
                        "stats": m.stats, "notes": m.notes, "protected": m.protected })
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        } else {
            for (_, m) in archives {
                writeln!(out, "{}", archive_line(m))?;
            }
        }
        out.flush()?;
        return Ok(outcome(warnings));
    };
    let (_, manifest) = repo.find_archive(name)?;
    let selection = Selection {
        includes: args.paths.iter().map(|p| Selection::normalize(p)).collect(),
        ..Default::default()
    };
    let index = repo.index().clone();
    // Only the item stream is read: listing never fetches file contents.
    let source = repo.blob_source();
    for item in ItemStreamReader::new(manifest.item_stream.clone(), |id| source.read_blob(id)) {
        let item = item?;
        if !selection.selects(&item.path) {
            continue;
        }
        // Damaged: content blobs are gone (`check --repair` reported the file). Asked of the
        // index, not of the archive's record, so a file a later backup healed shows whole.
        let damaged = item.chunks.iter().any(|c| !index.contains(&c.id));
        if args.json {
            let mut v = item_json(&item);
            if damaged {
                v["damaged"] = true.into();
            }
            writeln!(out, "{}", serde_json::to_string(&v)?)?;
        } else if damaged {
            writeln!(out, "{}  [DAMAGED: content lost]", tar_tv_line(&item))?;
        } else {
            writeln!(out, "{}", tar_tv_line(&item))?;
        }
    }
    out.flush()?;
    Ok(outcome(warnings))
}

fn outcome(warnings: u64) -> Outcome {
    if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    }
}

/// `NAME  TIME  [protected]  first line of the notes`: the name stays the first column.
fn archive_line(m: &crate::repo::Manifest) -> String {
    let mut line = format!("{:<48} {}", m.name, local_time_of(&m.start));
    if m.protected {
        line.push_str("  [protected]");
    }
    if let Some(first) = m.notes.lines().find(|l| !l.trim().is_empty()) {
        line.push_str("  ");
        line.push_str(first.trim());
        if m.notes.trim().lines().nth(1).is_some() {
            line.push_str(" ...");
        }
    }
    line
}

fn local_time_of(rfc3339: &str) -> String {
    rfc3339
        .parse::<jiff::Timestamp>()
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

pub fn display_name(item: &Item) -> String {
    let mut name = crate::item::display_path(&item.path);
    if item.is_dir() && !item.path.is_empty() {
        name.push('/');
    }
    name
}

/// `-rw-r--r-- 0/0  1234 2026-11-23 06:00 ./etc/passwd`, as GNU `tar tv --numeric-owner`.
pub fn tar_tv_line(item: &Item) -> String {
    let (type_char, size, suffix) = match &item.kind {
        Kind::File => ('-', item.size.to_string(), String::new()),
        Kind::Dir => ('d', "0".into(), String::new()),
        Kind::Symlink { target } => (
            'l',
            "0".into(),
            format!(" -> {}", String::from_utf8_lossy(target)),
        ),
        Kind::Hardlink { target } => (
            'h',
            "0".into(),
            format!(" link to {}", crate::item::display_path(target)),
        ),
        Kind::CharDevice { major, minor } => ('c', format!("{major},{minor}"), String::new()),
        Kind::BlockDevice { major, minor } => ('b', format!("{major},{minor}"), String::new()),
        Kind::Fifo => ('p', "0".into(), String::new()),
    };
    let mtime = jiff::Timestamp::from_second(item.mtime.secs)
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| item.mtime.secs.to_string());
    format!(
        "{}{} {}/{} {:>9} {} {}{}",
        type_char,
        mode_string(item.mode),
        item.uid,
        item.gid,
        size,
        mtime,
        display_name(item),
        suffix
    )
}

fn mode_string(mode: u32) -> String {
    let mut s: Vec<u8> = b"rwxrwxrwx".to_vec();
    for (i, c) in s.iter_mut().enumerate() {
        if mode & (0o400 >> i) == 0 {
            *c = b'-';
        }
    }
    let special = |s: &mut Vec<u8>, bit: u32, idx: usize, on_x: u8, no_x: u8| {
        if mode & bit != 0 {
            s[idx] = if s[idx] == b'-' { no_x } else { on_x };
        }
    };
    special(&mut s, 0o4000, 2, b's', b'S');
    special(&mut s, 0o2000, 5, b's', b'S');
    special(&mut s, 0o1000, 8, b't', b'T');
    String::from_utf8(s).unwrap_or_default()
}

fn item_json(item: &Item) -> serde_json::Value {
    let (kind, extra) = match &item.kind {
        Kind::File => ("file", serde_json::json!({})),
        Kind::Dir => ("dir", serde_json::json!({})),
        Kind::Symlink { target } => (
            "symlink",
            serde_json::json!({"target": String::from_utf8_lossy(target)}),
        ),
        Kind::Hardlink { target } => (
            "hardlink",
            serde_json::json!({"target": String::from_utf8_lossy(target)}),
        ),
        Kind::CharDevice { major, minor } => (
            "chardev",
            serde_json::json!({"major": major, "minor": minor}),
        ),
        Kind::BlockDevice { major, minor } => (
            "blockdev",
            serde_json::json!({"major": major, "minor": minor}),
        ),
        Kind::Fifo => ("fifo", serde_json::json!({})),
    };
    let mut v = serde_json::json!({
        "path": display_name(item),
        "type": kind,
        "mode": format!("{:04o}", item.mode),
        "uid": item.uid,
        "gid": item.gid,
        "size": item.size,
        "mtime": format!("{}.{:09}", item.mtime.secs, item.mtime.nanos),
        "sparse": item.sparse.is_some(),
        "xattrs": item.xattrs.iter().map(|x| String::from_utf8_lossy(&x.name).into_owned()).collect::<Vec<_>>(),
        "acl": item.acl_access.is_some() || item.acl_default.is_some(),
    });
    if let (Some(obj), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        obj.extend(e);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_like_ls() {
        assert_eq!(mode_string(0o755), "rwxr-xr-x");
        assert_eq!(mode_string(0o4755), "rwsr-xr-x");
        assert_eq!(mode_string(0o2644), "rw-r-Sr--");
        assert_eq!(mode_string(0o1777), "rwxrwxrwt");
    }
}
