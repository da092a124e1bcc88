//! The POSIX pax tar writer behind `proxborg export-tar ARCHIVE - | pct restore NEWID -`.
//!
//! Stream layout, per item: an optional pax `x` block (records below), the ustar header, the
//! content padded to 512 bytes. The end is two zero blocks, padded to a 10240-byte record as GNU
//! tar writes it. Member names are the item path with `./` in front (`./` for the root,
//! directories end in `/`), copied raw into the header: `pct restore` matches `./etc/vzdump/...`
//! and excludes `./dev/*` by those exact bytes.
//!
//! pax records written: `path`/`linkpath` (names over 100 bytes; raw bytes, GNU tar reads
//! non-UTF-8 back unchanged), `uid`/`gid`/`size` (values over the octal fields), `mtime`/`atime`
//! with ns, `SCHILY.acl.access`/`.default` (numeric ids), `SCHILY.xattr.<name>` (binary values),
//! and for files with holes GNU sparse 1.0 (`GNU.sparse.major=1`, `minor=0`, `name`,
//! `realsize`): the member's data starts with the map as decimal lines padded to 512, then each
//! data extent padded to 512 on its own (GNU tar reads every extent in whole blocks), and the map
//! ends with `(realsize, 0)`, without which GNU tar drops a trailing hole.
//!
//! Memory stays bounded: content is copied through one reusable buffer, never held whole.
//! This module never reads files, the repository or the clock.

use super::acl_text;
use super::header::{self, TypeFlag, UstarFields, BLOCK, MAX_OCTAL_12, MAX_OCTAL_8, NAME_LEN};
use super::pax::PaxRecords;
use crate::item::display_path;
use crate::item::{Extent, Item, Kind};
use std::io::{BufWriter, Read, Write};

pub use super::ExportError;

/// GNU tar's default record: 20 blocks. Readers accept any multiple of 512, but padding the end
/// like GNU tar does keeps `tar` from warning on some older versions.
const RECORD: u64 = 10240;
const COPY_BUF: usize = 1 << 20;
const OUT_BUF: usize = 256 << 10;

/// Writes a pax tar stream item by item. Wraps `out` in its own `BufWriter`, so a raw pipe or
/// file is fine; `finish` returns `out` after flushing.
pub struct TarWriter<W: Write> {
    out: BufWriter<W>,
    /// Bytes written so far, for the final record padding.
    written: u64,
    /// Reused for every content copy; allocated on first use.
    buf: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter {
            out: BufWriter::with_capacity(OUT_BUF, out),
            written: 0,
            buf: Vec::new(),
        }
    }

    /// Appends one member. `content` must yield exactly `item.stored_len()` bytes for
    /// `Kind::File` (the data extents concatenated for a sparse file) and is not read for other
    /// kinds. A `Kind::Hardlink` becomes a link entry to `./<target>`, which must be a member
    /// written earlier. After an error the stream is unusable.
    pub fn append(&mut self, item: &Item, content: &mut dyn Read) -> Result<(), ExportError> {
        let path = display_path(&item.path);
        let name = member_name(item)?;
        let mut pax = PaxRecords::default();
        let mut link: &[u8] = b"";
        let hardlink_target;
        let mut device = None;
        let mut size = 0u64;
        let mut sparse_map: Option<(Vec<Extent>, Vec<u8>)> = None;
        let typeflag = match &item.kind {
            Kind::File => match &item.sparse {
                None => {
                    size = item.size;
                    TypeFlag::Regular
                }
                Some(extents) => {
                    let extents = checked_extents(extents, item.size, &path)?;
                    let map = sparse_map_text(&extents, item.size);
                    size = extents
                        .iter()
                        .try_fold(map.len() as u64, |n, e| {
                            n.checked_add(e.len)?.checked_add(header::padding(e.len))
                        })
                        .ok_or_else(|| invalid(&path, "sparse member too large for tar"))?;
                    sparse_map = Some((extents, map));
                    TypeFlag::Regular
                }
            },
            Kind::Dir => TypeFlag::Dir,
            Kind::Symlink { target } => {
                link = target;
                TypeFlag::Symlink
            }
            Kind::Hardlink { target } => {
                if target.is_empty() {
                    return Err(invalid(&path, "hard link to the archive root"));
                }
                hardlink_target = [b"./".as_slice(), target].concat();
                link = &hardlink_target;
                TypeFlag::Hardlink
            }
            Kind::CharDevice { major, minor } => {
                device = Some((*major, *minor));
                TypeFlag::Char
            }
            Kind::BlockDevice { major, minor } => {
                device = Some((*major, *minor));
                TypeFlag::Block
            }
            Kind::Fifo => TypeFlag::Fifo,
        };

        // The ustar name of a sparse member is a placeholder; GNU.sparse.name is the real one
        // (and makes GNU tar ignore any `path` record), as GNU tar itself writes it.
        let header_name = match &sparse_map {
            Some(_) => {
                pax.push_str("GNU.sparse.major", "1");
                pax.push_str("GNU.sparse.minor", "0");
                pax.push(b"GNU.sparse.name", &name);
                pax.push_u64("GNU.sparse.realsize", item.size);
                sparse_placeholder_name(&name)
            }
            None => {
                if name.len() > NAME_LEN {
                    pax.push(b"path", &name);
                }
                name.clone()
            }
        };
        if link.len() > NAME_LEN {
            pax.push(b"linkpath", link);
        }
        if u64::from(item.uid) > MAX_OCTAL_8 {
            pax.push_u64("uid", item.uid.into());
        }
        if u64::from(item.gid) > MAX_OCTAL_8 {
            pax.push_u64("gid", item.gid.into());
        }
        if size > MAX_OCTAL_12 {
            pax.push_u64("size", size);
        }
        pax.push_time("mtime", item.mtime);
        pax.push_time("atime", item.atime);
        if let Some(acl) = &item.acl_access {
            pax.push_str("SCHILY.acl.access", &acl_text::to_text(acl));
        }
        if let (Kind::Dir, Some(acl)) = (&item.kind, &item.acl_default) {
            pax.push_str("SCHILY.acl.default", &acl_text::to_text(acl));
        }
        for x in &item.xattrs {
            pax.push_xattr(&x.name, &x.value);
        }

        if !pax.is_empty() {
            self.write_pax_block(&pax, &header_name, item.mtime.secs, &path)?;
        }
        let fields = UstarFields {
            name: &header_name,
            linkname: link,
            typeflag,
            mode: item.mode,
            uid: item.uid.into(),
            gid: item.gid.into(),
            size,
            mtime_secs: item.mtime.secs,
            device,
        };
        self.put(&header::encode(&fields, &path)?)?;

        match (&item.kind, sparse_map) {
            (Kind::File, None) => self.copy_padded(content, item.size, &path, 0)?,
            (Kind::File, Some((extents, map))) => {
                self.put(&map)?;
                let mut done = 0;
                for e in &extents {
                    self.copy_padded(content, e.len, &path, done)?;
                    done += e.len;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Ends the archive (two zero blocks, padded to a whole record) and returns the writer.
    pub fn finish(mut self) -> Result<W, ExportError> {
        let end = 2 * BLOCK;
        let total = self.written + end;
        let pad = end + (RECORD - total % RECORD) % RECORD;
        self.put_zeros(pad)?;
        self.out
            .into_inner()
            .map_err(|e| ExportError::Write(e.into_error()))
    }

    fn write_pax_block(
        &mut self,
        pax: &PaxRecords,
        member_name: &[u8],
        mtime_secs: i64,
        path: &str,
    ) -> Result<(), ExportError> {
        let name = pax_header_name(member_name);
        let records = pax.as_bytes();
        let fields = UstarFields {
            name: &name,
            linkname: b"",
            typeflag: TypeFlag::PaxExtended,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: records.len() as u64,
            mtime_secs,
            device: None,
        };
        self.put(&header::encode(&fields, path)?)?;
        self.put(records)?;
        self.put_zeros(header::padding(records.len() as u64))
    }

    /// Copies exactly `len` bytes of content, then pads to a block. `already` is how much
    /// content this item had yielded before, for the error message.
    fn copy_padded(
        &mut self,
        content: &mut dyn Read,
        len: u64,
        path: &str,
        already: u64,
    ) -> Result<(), ExportError> {
        if self.buf.is_empty() {
            self.buf = vec![0; COPY_BUF];
        }
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let n = match content.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(ExportError::ContentShort {
                        path: path.to_string(),
                        expected: already + len,
                        got: already + len - left,
                    })
                }
                Ok(n) => n.min(want),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ExportError::ReadContent {
                        path: path.to_string(),
                        source,
                    })
                }
            };
            self.out
                .write_all(&self.buf[..n])
                .map_err(ExportError::Write)?;
            self.written += n as u64;
            left -= n as u64;
        }
        self.put_zeros(header::padding(len))
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), ExportError> {
        self.out.write_all(bytes).map_err(ExportError::Write)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn put_zeros(&mut self, mut n: u64) -> Result<(), ExportError> {
        const ZEROS: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.put(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}

fn invalid(path: &str, reason: &str) -> ExportError {
    ExportError::InvalidItem {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// `./` + path, and a trailing `/` for directories; the root directory is `./`.
fn member_name(item: &Item) -> Result<Vec<u8>, ExportError> {
    if item.path.is_empty() && !item.is_dir() {
        return Err(invalid("./", "the archive root must be a directory"));
    }
    let mut name = Vec::with_capacity(item.path.len() + 3);
    name.extend_from_slice(b"./");
    name.extend_from_slice(&item.path);
    if item.is_dir() && !item.path.is_empty() {
        name.push(b'/');
    }
    Ok(name)
}

/// `dir/GNUSparseFile.0/base`, as GNU tar names sparse members (cut to fit the header; the
/// real name is in `GNU.sparse.name`).
fn sparse_placeholder_name(name: &[u8]) -> Vec<u8> {
    let (dir, base) = split_last(name);
    let mut out = [dir, b"/GNUSparseFile.0/", base].concat();
    out.truncate(NAME_LEN);
    out
}

/// `dir/PaxHeaders/base`, as GNU tar names its `x` blocks; only a tar without pax support
/// would ever see it.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (dir, base) = split_last(trimmed);
    let mut out = [dir, b"/PaxHeaders/", base].concat();
    out.truncate(NAME_LEN);
    out
}

fn split_last(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().rposition(|&b| b == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (b".", name),
    }
}

fn checked_extents(extents: &[Extent], size: u64, path: &str) -> Result<Vec<Extent>, ExportError> {
    crate::item::checked_extents(extents, size).map_err(|reason| invalid(path, reason))
}

/// The GNU sparse 1.0 map: entry count, then offset and length per entry, one decimal number
/// per line, NUL-padded to a block. The final `(size, 0)` entry keeps trailing holes.
fn sparse_map_text(extents: &[Extent], size: u64) -> Vec<u8> {
    let mut map = format!("{}\n", extents.len() + 1).into_bytes();
    for e in extents {
        map.extend_from_slice(format!("{}\n{}\n", e.offset, e.len).as_bytes());
    }
    map.extend_from_slice(format!("{size}\n0\n").as_bytes());
    let pad = header::padding(map.len() as u64) as usize;
    map.resize(map.len() + pad, 0);
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Timestamp;

    fn file(path: &str, content_len: u64) -> Item {
        let mut it = Item::new(path, Kind::File);
        it.size = content_len;
        it.mode = 0o644;
        it.mtime = Timestamp {
            secs: 1_700_000_000,
            nanos: 1,
        };
        it
    }

    #[test]
    fn layout_is_block_aligned_and_record_padded() {
        let mut w = TarWriter::new(Vec::new());
        w.append(&file("a", 3), &mut &b"abc"[..]).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % RECORD as usize, 0);
        // x header, its records, the ustar header, "abc" + padding.
        assert_eq!(out[156], b'x');
        let member = &out[1024..1536];
        assert_eq!(&member[..4], b"./a\0");
        assert_eq!(&out[1536..1539], b"abc");
        assert!(out[1539..].iter().all(|&b| b == 0));
    }

    #[test]
    fn short_content_is_an_error_naming_the_file() {
        let mut w = TarWriter::new(Vec::new());
        let err = w.append(&file("dir/f", 10), &mut &b"abc"[..]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("./dir/f") && msg.contains("3 of 10"), "{msg}");
    }

    #[test]
    fn bad_sparse_maps_are_rejected() {
        let mut it = file("s", 100);
        it.sparse = Some(vec![
            Extent {
                offset: 50,
                len: 10,
            },
            Extent { offset: 0, len: 10 },
        ]);
        let mut w = TarWriter::new(Vec::new());
        assert!(matches!(
            w.append(&it, &mut &[0u8; 20][..]),
            Err(ExportError::InvalidItem { .. })
        ));
        it.sparse = Some(vec![Extent {
            offset: 95,
            len: 10,
        }]);
        assert!(w.append(&it, &mut &[0u8; 10][..]).is_err());
        it.sparse = Some(vec![Extent {
            offset: u64::MAX,
            len: 10,
        }]);
        assert!(w.append(&it, &mut &[0u8; 10][..]).is_err());
        // Valid extents whose padded member size overflows u64.
        it.size = u64::MAX;
        it.sparse = Some(vec![Extent {
            offset: 0,
            len: u64::MAX - 10,
        }]);
        assert!(matches!(
            w.append(&it, &mut &[0u8; 10][..]),
            Err(ExportError::InvalidItem { .. })
        ));
    }

    #[test]
    fn sparse_map_ends_with_realsize() {
        let map = sparse_map_text(
            &[
                Extent { offset: 0, len: 5 },
                Extent {
                    offset: 4096,
                    len: 7,
                },
            ],
            10000,
        );
        assert_eq!(map.len(), 512);
        assert!(map.starts_with(b"3\n0\n5\n4096\n7\n10000\n0\n\0"));
    }

    #[test]
    fn names() {
        let root = Item::new("", Kind::Dir);
        assert_eq!(member_name(&root).unwrap(), b"./");
        assert_eq!(
            member_name(&Item::new("a/b", Kind::Dir)).unwrap(),
            b"./a/b/"
        );
        assert_eq!(
            member_name(&Item::new("a/b", Kind::Fifo)).unwrap(),
            b"./a/b"
        );
        assert!(member_name(&Item::new("", Kind::File)).is_err());
        assert_eq!(sparse_placeholder_name(b"./d/f"), b"./d/GNUSparseFile.0/f");
        assert_eq!(pax_header_name(b"./d/"), b"./PaxHeaders/d");
        assert_eq!(pax_header_name(b"./"), b"./PaxHeaders/.");
    }

    /// Content copied out of a 1 MiB pattern buffer, like decompressed chunks would be.
    struct Pattern<'a> {
        buf: &'a [u8],
        left: u64,
    }

    impl Read for Pattern<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out
                .len()
                .min(self.buf.len())
                .min(usize::try_from(self.left).unwrap_or(usize::MAX));
            out[..n].copy_from_slice(&self.buf[..n]);
            self.left -= n as u64;
            Ok(n)
        }
    }

    fn bench<W: Write>(label: &str, sink: W, file_size: u64) -> W {
        const TOTAL: u64 = 2 << 30;
        let pattern: Vec<u8> = (0..1 << 20).map(|i| (i * 7) as u8).collect();
        let mut w = TarWriter::new(sink);
        let start = std::time::Instant::now();
        for i in 0..TOTAL / file_size {
            let it = file(&format!("d/f{i}"), file_size);
            let mut content = Pattern {
                buf: &pattern,
                left: file_size,
            };
            w.append(&it, &mut content).unwrap();
        }
        let sink = w.finish().unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{label}, file size {file_size:>10}: {:>6.0} MB/s ({} items in {secs:.2} s)",
            TOTAL as f64 / secs / 1e6,
            TOTAL / file_size
        );
        sink
    }

    /// Run with `cargo test --release --lib export::tar::tests::throughput -- --ignored
    /// --nocapture`: 2 GiB of content into /dev/null and into a pipe read by `cat`, as one
    /// file, as 1 MiB files and as 4 KiB files (MB/s = 10^6 bytes of content per second).
    #[test]
    #[ignore = "benchmark; run in release"]
    fn throughput() {
        for file_size in [2 << 30, 1 << 20, 4 << 10] {
            let null = std::fs::OpenOptions::new().write(true).open("/dev/null");
            bench("/dev/null", null.unwrap(), file_size);
            let mut cat = std::process::Command::new("cat")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let pipe = cat.stdin.take().unwrap();
            drop(bench("pipe to cat", pipe, file_size));
            assert!(cat.wait().unwrap().success());
        }
    }
}
