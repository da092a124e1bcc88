//! Shared helpers for the command-line tests: a scratch repository and a `proxborg` command
//! with a clean environment (fast KDF, no inherited repository or passphrase).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const PASS: &str = "correct horse battery staple";

pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A scratch directory on /dev/shm when possible: tmpfs has ACLs, xattrs and caps.
    pub fn new() -> Self {
        let base = if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("pxb-test-")
                .tempdir_in(base)
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    /// `proxborg` with `--repo` set to this scratch's repository and the test passphrase; its
    /// cache and security record (`repo::trust`) live in the scratch too, never in /var.
    pub fn cmd(&self) -> Command {
        let mut c = proxborg();
        c.env("PROXBORG_REPO", self.repo())
            .env("PROXBORG_PASSPHRASE", PASS)
            .env("PROXBORG_CACHE_DIR", self.path("cache"))
            .env("PROXBORG_SECURITY_DIR", self.path("security"));
        c
    }

    /// The `proxborg --repo ...` prefix for shell pipelines, with the passphrase in the env.
    pub fn bin(&self) -> String {
        format!(
            "PROXBORG_TEST_FAST_KDF=1 PROXBORG_PASSPHRASE='{PASS}' PROXBORG_CACHE_DIR='{}' PROXBORG_SECURITY_DIR='{}' {} --repo '{}'",
            self.path("cache").display(),
            self.path("security").display(),
            env!("CARGO_BIN_EXE_proxborg"),
            self.repo().display()
        )
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run(self.cmd().args(args))
    }

    /// Runs and asserts exit 0.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_success(&out, args);
        out
    }

    pub fn init(&self, encryption: &str) {
        self.ok(&["init", "--encryption", encryption]);
    }

    pub fn create_stdin(&self, name: &str, data: &[u8]) -> Output {
        create_stdin_with(self.cmd(), name, data)
    }
}

pub fn proxborg() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_proxborg"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PROXBORG_") {
            c.env_remove(&k);
        }
    }
    c.env("PROXBORG_TEST_FAST_KDF", "1");
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("running proxborg")
}

pub fn assert_success(out: &Output, what: &[&str]) {
    assert!(
        out.status.success(),
        "proxborg {what:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Runs a shell command line and returns stdout; panics with stderr on failure.
pub fn sh(script: &str) -> String {
    let out = Command::new("/bin/bash")
        .args(["-euo", "pipefail", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (incompressible, reproducible).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Builds the every-kind-of-entry tree of `tests/common/tree.sh` at `root`, ids from `base`.
pub fn build_tree(root: &Path, base: u32) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/tree.sh");
    sh(&format!("{script} '{}' {base}", root.display()));
}

/// The same tree without device nodes outside ./dev, as an unprivileged container has.
pub fn build_container_tree(root: &Path, base: u32) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/tree.sh");
    sh(&format!("{script} '{}' {base} nodevices", root.display()));
}

/// GNU tar's arguments exactly as `pct restore` runs them (PVE-FACTS §1.2), reading stdin.
pub const PCT_RESTORE_TAR: &str =
    "tar xpf - --totals --one-file-system -p --sparse --numeric-owner \
    --acls --xattrs --xattrs-include=user.* --xattrs-include=security.capability \
    --warning=no-file-ignored --warning=no-xattr-write";

/// `PCT_RESTORE_TAR` into `dest`, with the trailing flags of the real command line.
pub fn pct_restore_tar(dest: &Path) -> String {
    format!(
        "{PCT_RESTORE_TAR} -C '{}' --skip-old-files --anchored --exclude './dev/*'",
        dest.display()
    )
}

/// Adds the id range every PVE host has to /etc/subuid and /etc/subgid if missing.
pub fn ensure_subids() {
    sh("for f in /etc/subuid /etc/subgid; do grep -qx 'root:100000:65536' $f 2>/dev/null || echo 'root:100000:65536' >> $f; done");
}

/// Everything about a tree that a restore must reproduce, as text to compare: one line per
/// entry (type, mode, owner, size, mtime ns, link target, device numbers, link count, content
/// hash), then `getfacl -n` and `getfattr -d -m -` dumps. atime is left out (reading changes it).
pub fn tree_dump(root: &Path) -> String {
    sh(&format!(
        "cd '{}' && find . -printf '%p|%y|%m|%U|%G|%s|%T@|%l|%n\\n' | LC_ALL=C sort | while IFS= read -r line; do \
           p=${{line%%|*}}; extra=''; \
           if [ -b \"$p\" ] || [ -c \"$p\" ]; then extra=$(stat -c '%t,%T' \"$p\"); fi; \
           if [ -f \"$p\" ] && [ ! -L \"$p\" ]; then extra=$(md5sum < \"$p\" | cut -c1-32); fi; \
           echo \"$line|$extra\"; done; \
         getfacl -R -n -p -P . 2>/dev/null | awk 'BEGIN{{RS=\"\"}} {{gsub(\"\\n\", \" ; \"); print}}' | LC_ALL=C sort; \
         getfattr -R -h -d -m - -e hex . 2>/dev/null | awk 'BEGIN{{RS=\"\"}} {{gsub(\"\\n\", \" ; \"); print}}' | LC_ALL=C sort",
        root.display()
    ))
}

/// Blocks allocated to a file (st_blocks, 512-byte units).
pub fn blocks(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().blocks()
}

/// Panics with the first differing lines of two dumps.
pub fn assert_dumps_equal(a: &str, b: &str, what: &str) {
    if a != b {
        let diff: Vec<String> = a
            .lines()
            .zip(b.lines())
            .filter(|(x, y)| x != y)
            .take(10)
            .map(|(x, y)| format!("-{x}\n+{y}"))
            .collect();
        panic!("{what}:\n{}", diff.join("\n"));
    }
}

/// Runs `hooks/proxborg-vzdump-hook ARGS` the way vzdump does: an emptied environment holding
/// only `LC_ALL=C`, vzdump's variables `vars`, and where a package would have put the binary
/// and the settings file (`PROXBORG_BIN`, `PROXBORG_CONFIG`; vzdump sets neither). Two test
/// settings too: the fast KDF the test repositories' keys were made with (the test build
/// refuses such keys without it), and the security record in `security` beside the settings
/// file (the `Scratch`'s), not in /var/lib.
pub fn run_vzdump_hook(conf: &Path, vars: &[(&str, String)], args: &[&str]) -> Output {
    let mut c = Command::new("env");
    c.arg("-i").arg("LC_ALL=C").arg("PROXBORG_TEST_FAST_KDF=1");
    if let Some(dir) = conf.parent() {
        c.arg(format!(
            "PROXBORG_SECURITY_DIR={}",
            dir.join("security").display()
        ));
    }
    for (k, v) in vars {
        c.arg(format!("{k}={v}"));
    }
    c.arg(format!("PROXBORG_BIN={}", env!("CARGO_BIN_EXE_proxborg")))
        .arg(format!("PROXBORG_CONFIG={}", conf.display()))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/hooks/proxborg-vzdump-hook"
        ))
        .args(args);
    c.output().expect("running the hook")
}

/// `create NAME -` through `cmd` (a proxborg command with its repository set), `data` on stdin.
pub fn create_stdin_with(cmd: Command, name: &str, data: &[u8]) -> Output {
    use std::io::Write;
    let mut child = spawn_create_stdin(cmd, name);
    // proxborg may stop reading early (a full disk, a refused repository, a lost
    // connection): its exit status says why, so a closed pipe is not the test's failure.
    if let Err(e) = child.stdin.take().unwrap().write_all(data) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

/// `mib` MiB of noise, 1 MiB per seed 0, 1, ...: what `spawn_stream_backup` feeds.
pub fn noise_stream(mib: u64) -> Vec<u8> {
    (0..mib).flat_map(|i| noise(1 << 20, i)).collect()
}

/// Starts `create NAME -` through `cmd` and feeds it `noise_stream(mib)` from a thread, for
/// tests that kill something mid-backup. The feeder stops quietly when the pipe closes.
pub fn spawn_stream_backup(
    cmd: Command,
    name: &str,
    mib: u64,
) -> (std::process::Child, std::thread::JoinHandle<()>) {
    use std::io::Write;
    let mut child = spawn_create_stdin(cmd, name);
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 0..mib {
            if stdin.write_all(&noise(1 << 20, i)).is_err() {
                return;
            }
        }
    });
    (child, feeder)
}

/// `create NAME -` through `cmd`, all three standard streams piped.
fn spawn_create_stdin(mut cmd: Command, name: &str) -> std::process::Child {
    cmd.args(["create", name, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
