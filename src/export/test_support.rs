//! Test helpers for the export tests: write a tar from in-memory items, extract it with GNU tar
//! exactly as `pct restore` runs it (PVE-FACTS §1.2), and read results back with real tools.
//! Missing prerequisites fail the test with the package that provides them; nothing skips.

use super::TarWriter;
use crate::item::Item;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `@COMMON_TAR_FLAGS` from pve-storage `Plugin.pm`, in order.
pub const COMMON_TAR_FLAGS: &[&str] = &[
    "--one-file-system",
    "-p",
    "--sparse",
    "--numeric-owner",
    "--acls",
    "--xattrs",
    "--xattrs-include=user.*",
    "--xattrs-include=security.capability",
    "--warning=no-file-ignored",
    "--warning=no-xattr-write",
];

/// The `lxc-usernsexec` prefix PVE uses for the default unprivileged id map.
pub const USERNS_PREFIX: &[&str] = &[
    "lxc-usernsexec",
    "-m",
    "u:0:100000:65536",
    "-m",
    "g:0:100000:65536",
    "--",
];

pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests restore owners, devices and capabilities: run them as root"
    );
}

/// Fails (never skips) when `program` is not on PATH, naming the Debian package to install.
pub fn require_program(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(found, "`{program}` not found: apt-get install {package}");
}

/// A fresh directory on /dev/shm, which supports POSIX ACLs, user xattrs and file capabilities.
pub fn shm_dir() -> tempfile::TempDir {
    assert!(
        Path::new("/dev/shm").is_dir(),
        "/dev/shm (tmpfs) is needed for ACL/xattr/capability tests"
    );
    tempfile::Builder::new()
        .prefix("proxborg-export-")
        .tempdir_in("/dev/shm")
        .expect("create a temp dir on /dev/shm")
}

/// Writes `items` (each with its stored content) to `path` through `TarWriter`.
pub fn write_tar(path: &Path, items: &[(Item, Vec<u8>)]) {
    let f = std::fs::File::create(path).expect("create tar file");
    let mut w = TarWriter::new(f);
    for (item, content) in items {
        w.append(item, &mut content.as_slice())
            .unwrap_or_else(|e| panic!("append {:?}: {e}", String::from_utf8_lossy(&item.path)));
    }
    let f = w.finish().expect("finish tar");
    f.sync_all().expect("sync tar");
}

/// The full `pct restore` extraction argv, optionally inside the default unprivileged userns.
pub fn pct_restore_argv(dest: &Path, userns: bool) -> Vec<String> {
    let mut argv: Vec<String> = Vec::new();
    if userns {
        argv.extend(USERNS_PREFIX.iter().map(|s| s.to_string()));
    }
    argv.extend(["tar", "xpf", "-", "--totals"].map(String::from));
    argv.extend(COMMON_TAR_FLAGS.iter().map(|s| s.to_string()));
    argv.push("-C".into());
    argv.push(dest.display().to_string());
    argv.extend(["--skip-old-files", "--anchored", "--exclude", "./dev/*"].map(String::from));
    argv
}

/// Runs the `pct restore` extraction with the tar file as stdin; returns tar's stderr. Panics
/// with tar's stderr when it fails.
pub fn pct_extract(tar: &Path, dest: &Path, userns: bool) -> String {
    pct_extract_in_locale(tar, dest, userns, "C")
}

/// `pct_extract` with `LC_ALL` set to `locale` (GNU tar converts pax names through iconv).
pub fn pct_extract_in_locale(tar: &Path, dest: &Path, userns: bool, locale: &str) -> String {
    let (argv, out) = pct_extract_output(tar, dest, userns, locale);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{argv:?} failed: {}\n{stderr}",
        out.status
    );
    stderr
}

/// Runs the `pct restore` extraction and returns its argv and output, whatever the status.
pub fn pct_extract_output(
    tar: &Path,
    dest: &Path,
    userns: bool,
    locale: &str,
) -> (Vec<String>, Output) {
    require_program("tar", "tar");
    if userns {
        require_program("lxc-usernsexec", "lxc");
    }
    let argv = pct_restore_argv(dest, userns);
    let stdin = std::fs::File::open(tar).expect("open tar");
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .env("LC_ALL", locale)
        .stdin(Stdio::from(stdin))
        .output()
        .expect("spawn tar");
    (argv, out)
}

/// Runs a command with byte-string arguments; returns stdout, panicking with stderr on failure.
pub fn run(program: &str, args: &[&[u8]]) -> Vec<u8> {
    let out = output(program, args);
    assert!(
        out.status.success(),
        "{program} {:?} failed: {}",
        args.iter()
            .map(|a| String::from_utf8_lossy(a))
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn run_str(program: &str, args: &[&[u8]]) -> String {
    String::from_utf8(run(program, args)).expect("tool output is UTF-8")
}

pub fn output(program: &str, args: &[&[u8]]) -> Output {
    Command::new(program)
        .args(args.iter().map(|a| OsStr::from_bytes(a)))
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"))
}

/// `dir` joined with a raw byte path.
pub fn at(dir: &Path, rel: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(rel))
}

/// `stat -c FORMAT` of a path (not following symlinks), trimmed.
pub fn stat(path: &Path, format: &str) -> String {
    run_str(
        "stat",
        &[b"-c", format.as_bytes(), path.as_os_str().as_bytes()],
    )
    .trim_end()
    .to_string()
}

/// `getfacl -n` without the comment lines: the ACL entries as getfacl prints them.
pub fn getfacl(path: &Path) -> Vec<String> {
    require_program("getfacl", "acl");
    run_str(
        "getfacl",
        &[b"-n", b"-p", b"--omit-header", path.as_os_str().as_bytes()],
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(String::from)
    .collect()
}

/// `getfattr -d -m - -e hex` as `name=0xHEX` lines (ACL xattrs included, as getfattr shows them).
pub fn getfattr_hex(path: &Path) -> Vec<String> {
    require_program("getfattr", "attr");
    run_str(
        "getfattr",
        &[
            b"-h",
            b"-d",
            b"-m",
            b"-",
            b"-e",
            b"hex",
            b"--absolute-names",
            path.as_os_str().as_bytes(),
        ],
    )
    .lines()
    .filter(|l| !l.is_empty() && !l.starts_with('#'))
    .map(String::from)
    .collect()
}

/// Adds `root:100000:65536` to /etc/subuid and /etc/subgid when missing (a PVE host has it;
/// lxc-usernsexec refuses a mapping root is not allowed to use).
pub fn ensure_root_subids() {
    for file in ["/etc/subuid", "/etc/subgid"] {
        let current = std::fs::read_to_string(file).unwrap_or_default();
        if current.lines().any(|l| l.trim() == "root:100000:65536") {
            continue;
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .unwrap_or_else(|e| panic!("open {file} to add root:100000:65536: {e}"));
        let sep = if current.is_empty() || current.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        writeln!(f, "{sep}root:100000:65536").expect("append subid line");
    }
}
