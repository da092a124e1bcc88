//! One 512-byte ustar header block, encoded with the `tar` crate's `Header` (octal fields,
//! checksum) but with names and link names copied in as raw bytes: `Header::set_path` would
//! strip the `./` prefix `pct restore` depends on and reject non-UTF-8.
//!
//! A value that does not fit its ustar field is not written there (the field stays 0); the
//! caller carries it in a pax record instead, as POSIX intends. The `tar` crate would silently
//! switch to GNU base-256, which strict ustar/pax readers reject.

use super::ExportError;

pub(crate) const BLOCK: u64 = 512;
pub(crate) const NAME_LEN: usize = 100;
/// Largest value of an 8-byte octal field (7 digits + NUL): uid, gid, mode, dev numbers.
pub(crate) const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal field (11 digits + NUL): size, mtime.
pub(crate) const MAX_OCTAL_12: u64 = 0o77_777_777_777;

/// tar type flags this writer emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TypeFlag {
    Regular,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
    PaxExtended,
}

impl TypeFlag {
    fn byte(self) -> u8 {
        match self {
            TypeFlag::Regular => b'0',
            TypeFlag::Hardlink => b'1',
            TypeFlag::Symlink => b'2',
            TypeFlag::Char => b'3',
            TypeFlag::Block => b'4',
            TypeFlag::Dir => b'5',
            TypeFlag::Fifo => b'6',
            TypeFlag::PaxExtended => b'x',
        }
    }
}

/// Fields of a ustar header; names longer than 100 bytes are cut (the pax record holds them).
pub(crate) struct UstarFields<'a> {
    pub name: &'a [u8],
    pub linkname: &'a [u8],
    pub typeflag: TypeFlag,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime_secs: i64,
    pub device: Option<(u32, u32)>,
}

/// `path` is only used in error messages.
pub(crate) fn encode(f: &UstarFields<'_>, path: &str) -> Result<[u8; 512], ExportError> {
    let mut h = ::tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().ok_or_else(|| ExportError::InvalidItem {
            path: path.to_string(),
            reason: "tar crate did not build a ustar header".into(),
        })?;
        copy_cut(&mut u.name, f.name);
        copy_cut(&mut u.linkname, f.linkname);
        u.typeflag[0] = f.typeflag.byte();
    }
    h.set_mode(f.mode & 0o7777);
    if f.uid <= MAX_OCTAL_8 {
        h.set_uid(f.uid);
    } else {
        h.set_uid(0);
    }
    if f.gid <= MAX_OCTAL_8 {
        h.set_gid(f.gid);
    } else {
        h.set_gid(0);
    }
    h.set_size(if f.size <= MAX_OCTAL_12 { f.size } else { 0 });
    let mtime = u64::try_from(f.mtime_secs)
        .ok()
        .filter(|&s| s <= MAX_OCTAL_12);
    h.set_mtime(mtime.unwrap_or(0));
    // ustar has room for device numbers on every entry; GNU tar writes zeros when unused.
    let (major, minor) = f.device.unwrap_or((0, 0));
    if u64::from(major) > MAX_OCTAL_8 || u64::from(minor) > MAX_OCTAL_8 {
        return Err(ExportError::InvalidItem {
            path: path.to_string(),
            reason: format!("device {major}:{minor} does not fit a tar header"),
        });
    }
    let dev_err = |e: std::io::Error| ExportError::InvalidItem {
        path: path.to_string(),
        reason: format!("device number: {e}"),
    };
    h.set_device_major(major).map_err(dev_err)?;
    h.set_device_minor(minor).map_err(dev_err)?;
    h.set_cksum();
    Ok(*h.as_bytes())
}

fn copy_cut(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

/// Bytes of NUL padding that bring `len` up to a whole block.
pub(crate) fn padding(len: u64) -> u64 {
    (BLOCK - len % BLOCK) % BLOCK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(name: &[u8]) -> UstarFields<'_> {
        UstarFields {
            name,
            linkname: b"",
            typeflag: TypeFlag::Regular,
            mode: 0o104755,
            uid: 33,
            gid: 4_000_000_000,
            size: MAX_OCTAL_12 + 1,
            mtime_secs: -5,
            device: None,
        }
    }

    #[test]
    fn raw_name_and_overflow_fields() {
        let b = encode(&fields(b"./a\xff\n"), "x").unwrap();
        let h = ::tar::Header::from_byte_slice(&b);
        assert_eq!(&b[..6], b"./a\xff\n\0");
        assert_eq!(&b[257..263], b"ustar\0");
        assert_eq!(h.mode().unwrap(), 0o4755);
        assert_eq!(h.uid().unwrap(), 33);
        // Overflowing values stay zero in octal, never base-256.
        assert_eq!(&b[116..124], b"0000000\0");
        assert_eq!(h.size().unwrap(), 0);
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.cksum().unwrap(), {
            let mut c = b;
            c[148..156].fill(b' ');
            c.iter().map(|&x| u32::from(x)).sum::<u32>()
        });
    }

    #[test]
    fn long_names_are_cut() {
        let name = vec![b'n'; 150];
        let b = encode(&fields(&name), "x").unwrap();
        assert_eq!(&b[..100], &name[..100]);
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
    }
}
