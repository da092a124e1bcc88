//! Test fixture: a directory tree on /dev/shm (tmpfs: POSIX ACLs, user xattrs and file
//! capabilities work there) holding every entry type the walker must handle, built with the
//! real tools (`setfacl`, `setfattr`, `setcap`) so the tests check against what they write.
//! Tests only; needs root.

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

pub const GIB: u64 = 1 << 30;
pub const ODD_TARGET: &[u8] = b"../odd\x01 target/\xff\nend";
pub const XATTR_VALUE: &[u8] = &[0, 1, 2, 0xff, b'\n'];
/// `setcap cap_net_raw+ep` as the kernel stores it: VFS_CAP_REVISION_2 | effective,
/// permitted bit 13, nothing inheritable.
pub const CAP_NET_RAW_EP: &[u8] = &[
    0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
pub const MTIME: (i64, u32) = (1_600_000_000, 123_456_789);

/// Runs a tool and insists on success; a missing tool names its Debian package.
pub fn run(prog: &str, args: &[&OsStr], package: &str) -> Vec<u8> {
    run_in(Path::new("/"), prog, args, package)
}

/// `run` with the working directory `dir`, so tools print relative names.
pub fn run_in(dir: &Path, prog: &str, args: &[&OsStr], package: &str) -> Vec<u8> {
    let out = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog} ({e}): apt-get install {package}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

pub fn shm_tempdir() -> tempfile::TempDir {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests need root (mknod, chown, setcap, trusted xattrs)"
    );
    tempfile::tempdir_in("/dev/shm").expect("a tempdir on /dev/shm (tmpfs) is needed")
}

/// Names of the deep directories: 21 x 200 bytes, so the leaf path is over 4 KiB.
pub fn deep_path() -> Vec<u8> {
    let mut p = b"deep".to_vec();
    for i in 0..21u8 {
        p.push(b'/');
        p.extend(std::iter::repeat_n(b'a' + i, 200));
    }
    p.extend_from_slice(b"/leaf");
    p
}

fn mkdirs_at(root: &Path, rel: &[u8]) -> OwnedFd {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut fd = rustix::fs::openat(rustix::fs::CWD, root, flags, Mode::empty()).unwrap();
    for comp in rel.split(|&b| b == b'/') {
        rustix::fs::mkdirat(&fd, comp, Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, comp, flags, Mode::empty()).unwrap();
    }
    fd
}

fn set_mtime(path: &Path) {
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: MTIME.0 - 100,
            tv_nsec: 5,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: MTIME.0,
            tv_nsec: MTIME.1.into(),
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &t,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Builds the full tree under `root` (which must exist). A socket is included: the walker
/// must skip it with a warning.
pub fn build(root: &Path) -> std::os::unix::net::UnixListener {
    let p = |name: &str| root.join(name);
    fs::write(p("empty"), b"").unwrap();
    fs::write(p("file"), b"hello\n").unwrap();
    run(
        "setfacl",
        &[
            os("--set"),
            os("u::rw-,u:1000:r--,g::r--,m::r--,o::---"),
            p("file").as_os_str(),
        ],
        "acl",
    );
    rustix::fs::chown(
        p("file"),
        Some(rustix::fs::Uid::from_raw(1234)),
        Some(rustix::fs::Gid::from_raw(5678)),
    )
    .unwrap();
    let dir = p("setgid_dir");
    fs::create_dir(&dir).unwrap();
    let access = "u::rwx,u:1000:rwx,g::rwx,g:2000:r-x,m::rwx,o::r-x";
    run(
        "setfacl",
        &[os("--set"), os(access), dir.as_os_str()],
        "acl",
    );
    let default = "u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---";
    run(
        "setfacl",
        &[os("-d"), os("--set"), os(default), dir.as_os_str()],
        "acl",
    );
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o2775)).unwrap();
    // Created after the default ACL, so it inherits an access ACL from it.
    fs::write(dir.join("inner"), b"inner\n").unwrap();
    fs::write(p("setgid_dir.txt"), b"after the dir\n").unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(ODD_TARGET), p("link_odd")).unwrap();
    fs::write(p("hard1"), b"shared\n").unwrap();
    fs::hard_link(p("hard1"), p("hard2")).unwrap();
    let dev = rustix::fs::makedev(1, 3);
    let cwd = rustix::fs::CWD;
    let mode = Mode::from_raw_mode(0o644);
    rustix::fs::mknodat(cwd, p("fifo"), rustix::fs::FileType::Fifo, mode, 0).unwrap();
    rustix::fs::mknodat(
        cwd,
        p("null"),
        rustix::fs::FileType::CharacterDevice,
        mode,
        dev,
    )
    .unwrap();
    fs::write(p("xattr_file"), b"x\n").unwrap();
    run(
        "setfattr",
        &[
            os("-n"),
            os("user.bin"),
            os("-v"),
            os("0x000102ff0a"),
            p("xattr_file").as_os_str(),
        ],
        "attr",
    );
    fs::write(p("ping"), b"\x7fELF pretend\n").unwrap();
    fs::set_permissions(p("ping"), fs::Permissions::from_mode(0o4755)).unwrap();
    run(
        "setcap",
        &[os("cap_net_raw+ep"), p("ping").as_os_str()],
        "libcap2-bin",
    );
    let sparse = fs::File::create(p("sparse")).unwrap();
    sparse.set_len(GIB).unwrap();
    sparse.write_all_at(&[b'A'; 4096], 0).unwrap();
    sparse.write_all_at(&[b'Z'; 4096], GIB - 4096).unwrap();
    fs::write(root.join(OsStr::from_bytes(b"bad\xffname")), b"latin1\n").unwrap();
    fs::write(root.join(OsStr::from_bytes(b"new\nline")), b"nl\n").unwrap();
    let deep = deep_path();
    let leaf_dir = &deep[..deep.len() - b"/leaf".len()];
    let leaf_parent = mkdirs_at(root, leaf_dir);
    let leaf = rustix::fs::openat(
        &leaf_parent,
        "leaf",
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .unwrap();
    fs::File::from(leaf)
        .write_all_at(b"deep down\n", 0)
        .unwrap();
    for name in ["file", "link_odd", "setgid_dir", "sparse"] {
        set_mtime(&p(name));
    }
    std::os::unix::net::UnixListener::bind(p("sock")).unwrap()
}

/// The walk order of `build`'s tree: tar order, the deep chain after `deep`.
pub fn expected_paths() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![b"".to_vec(), b"bad\xffname".to_vec()];
    let deep = deep_path();
    for (i, &b) in deep.iter().enumerate() {
        if b == b'/' {
            out.push(deep[..i].to_vec());
        }
    }
    out.push(deep);
    for name in [
        "empty",
        "fifo",
        "file",
        "hard1",
        "hard2",
        "link_odd",
        "new\nline",
        "null",
        "ping",
        "setgid_dir",
        "setgid_dir/inner",
        "setgid_dir.txt",
        "sparse",
        "xattr_file",
    ] {
        out.push(name.as_bytes().to_vec());
    }
    out
}
