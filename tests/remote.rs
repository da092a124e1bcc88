//! `ssh://` repositories against a real sshd on 127.0.0.1 (its own config, host key and
//! authorized_keys in a temp dir, stopped on drop); the remote command is this build's binary.

mod common;

use common::*;
use proxborg::repo::backend::{conformance, local::LocalDir, Backend};
use proxborg::repo::location::SshUrl;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_proxborg");

struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (apt-get install openssh-client)");
    assert!(st.success());
}

impl Sshd {
    /// Keys: `plain` (any command), `restricted` (forced serve --restrict-to-path <dir>/allowed),
    /// `appendonly` (forced serve --append-only).
    fn start() -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "sshd missing: apt-get install openssh-server openssh-client"
        );
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::Builder::new()
            .prefix("pxb-sshd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("allowed")).unwrap();
        keygen(&d.join("host_key"));
        let mut auth = String::new();
        for (name, opts) in [
            ("plain", String::new()),
            (
                "restricted",
                format!(
                    "command=\"{BIN} serve --restrict-to-path {}\",restrict ",
                    d.join("allowed").display()
                ),
            ),
            (
                "appendonly",
                format!("command=\"{BIN} serve --append-only\",restrict "),
            ),
        ] {
            keygen(&d.join(name));
            let public = std::fs::read_to_string(d.join(format!("{name}.pub"))).unwrap();
            auth.push_str(&format!("{opts}{public}"));
        }
        std::fs::write(d.join("authorized_keys"), auth).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\n\
                 AuthorizedKeysFile {ak}\nStrictModes no\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nSubsystem sftp internal-sftp\n",
                hk = d.join("host_key").display(),
                pid = d.join("sshd.pid").display(),
                ak = d.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let s = Sshd { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start: {}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn rsh(&self, key: &str) -> String {
        format!(
            "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR",
            self.dir.path().join(key).display()
        )
    }

    fn url(&self, path: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, path.display())
    }

    /// A proxborg command for `ssh://...path` with `key`.
    fn cmd(&self, s: &Scratch, key: &str, path: &Path) -> Command {
        let mut c = s.cmd();
        c.env("PROXBORG_REPO", self.url(path))
            .env("PROXBORG_RSH", self.rsh(key))
            .env("PROXBORG_REMOTE_PATH", BIN);
        c
    }

    /// Pids of sshd's per-connection children (ours: we started this sshd).
    fn connection_pids(&self) -> Vec<i32> {
        let pid = self.child.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

fn ok(c: &mut Command) -> std::process::Output {
    let out = run(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    out
}

fn one_line_error(out: &std::process::Output, says: &str) -> String {
    assert_eq!(code(&out.clone()), 2, "{}", stderr(out));
    let err = stderr(out);
    assert!(
        err.contains(says) && err.trim_end().lines().count() == 1,
        "expected one line with {says:?}: {err}"
    );
    err
}

#[test]
fn a_repository_over_ssh_round_trips() {
    let sshd = Sshd::start();
    let s = Scratch::new();
    let repo = s.path("remote-repo");
    let c = |args: &[&str]| {
        let mut c = sshd.cmd(&s, "plain", &repo);
        c.args(args);
        c
    };
    ok(&mut c(&["init", "--encryption", "repokey"]));
    assert!(
        repo.join("config").exists(),
        "the server wrote the repository"
    );
    // A tree with a file larger than a pack, so several packs are pipelined.
    let src = s.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let big = noise(40 << 20, 7);
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::write(src.join("sub/small"), b"small file\n").unwrap();
    ok(c(&["create", "first"]).arg(&src));
    std::fs::write(src.join("sub/small"), b"changed\n").unwrap();
    ok(c(&["create", "second"]).arg(&src));
    let list = ok(&mut c(&["list"]));
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("first") && text.contains("second"), "{text}");
    let dest = s.path("dest");
    std::fs::create_dir(&dest).unwrap();
    ok(c(&["extract", "first", "--directory"]).arg(&dest));
    let restored = files_under(&dest)
        .into_iter()
        .find(|p| p.ends_with("big"))
        .expect("big extracted");
    assert!(std::fs::read(restored).unwrap() == big, "byte-exact");
    ok(&mut c(&["check", "--verify-data"]));
    // Each archive name is its own series: prune keeps both, delete frees the first.
    ok(&mut c(&["prune", "--keep-last", "1"]));
    ok(&mut c(&["delete", "first"]));
    ok(&mut c(&["compact"]));
    ok(&mut c(&["check", "--verify-data"]));
    let list = ok(&mut c(&["list"]));
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(!text.contains("first") && text.contains("second"), "{text}");
}

#[test]
fn restrict_to_path_refuses_other_paths_and_escapes() {
    let sshd = Sshd::start();
    let s = Scratch::new();
    let allowed = sshd.dir.path().join("allowed");
    ok(sshd
        .cmd(&s, "restricted", &allowed.join("repo"))
        .args(["init", "--encryption", "none"]));
    std::os::unix::fs::symlink(s.path(""), allowed.join("link")).unwrap();
    for bad in [
        s.path("elsewhere"),
        allowed.join("../escape"),
        allowed.join("link/repo"),
    ] {
        let out = run(sshd
            .cmd(&s, "restricted", &bad)
            .args(["init", "--encryption", "none"]));
        one_line_error(&out, "outside every --restrict-to-path");
        assert!(!bad.exists(), "{}", bad.display());
    }
}

#[test]
fn an_append_only_key_creates_but_never_deletes() {
    let sshd = Sshd::start();
    let s = Scratch::new();
    let repo = s.path("ao-repo");
    ok(sshd
        .cmd(&s, "appendonly", &repo)
        .args(["init", "--encryption", "none"]));
    let out = create_stdin_with(sshd.cmd(&s, "appendonly", &repo), "one", b"data one");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = create_stdin_with(sshd.cmd(&s, "appendonly", &repo), "two", b"data two");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    one_line_error(
        &run(sshd.cmd(&s, "appendonly", &repo).args(["delete", "one"])),
        "append-only",
    );
    one_line_error(
        &run(sshd.cmd(&s, "appendonly", &repo).args(["compact"])),
        "append-only",
    );
    one_line_error(
        &run(sshd
            .cmd(&s, "appendonly", &repo)
            .args(["prune", "--keep-last", "1"])),
        "append-only",
    );
    // Switching append-only off from the client means replacing the config: refused too.
    one_line_error(
        &run(sshd
            .cmd(&s, "appendonly", &repo)
            .args(["config", "append-only", "off"])),
        "append-only",
    );
    assert!(
        std::fs::read_dir(repo.join("locks"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "locks are still removed"
    );
    // The same repository over the plain key is not append-only.
    ok(sshd.cmd(&s, "plain", &repo).args(["delete", "one"]));
}

#[test]
fn a_killed_connection_is_one_line_and_leaves_a_sound_repository() {
    let sshd = Sshd::start();
    let s = Scratch::new();
    let repo = s.path("k-repo");
    ok(sshd
        .cmd(&s, "plain", &repo)
        .args(["init", "--encryption", "none"]));
    let (child, feeder) = spawn_stream_backup(sshd.cmd(&s, "plain", &repo), "killed", 400);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Killed once an index file names some packs: the rerun below can reuse those.
    while files_under(&repo.join("index")).is_empty() {
        assert!(Instant::now() < deadline, "no index file arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in sshd.connection_pids() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let err = one_line_error(&out, "127.0.0.1");
    assert!(err.contains("connection to"), "{err}");
    ok(sshd.cmd(&s, "plain", &repo).args(["check"]));
    // The rerun of the same data reuses what the indexed packs already hold.
    let out = create_stdin_with(sshd.cmd(&s, "plain", &repo), "rerun", &noise_stream(400));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let info = ok(sshd
        .cmd(&s, "plain", &repo)
        .args(["info", "rerun", "--json"]));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let (added, original) = (
        info["added_size"].as_u64().unwrap(),
        info["original_size"].as_u64().unwrap(),
    );
    eprintln!("rerun over ssh after the kill: {added} of {original} bytes new");
    assert!(
        added < original,
        "nothing of the killed run was reused: {info}"
    );
    ok(sshd
        .cmd(&s, "plain", &repo)
        .args(["check", "--verify-data"]));
}

#[test]
fn the_metadata_rich_tree_round_trips_over_ssh_as_through_a_local_repository() {
    let sshd = Sshd::start();
    let s = Scratch::new();
    let src = s.path("src");
    build_tree(&src, 0);
    // Reading every file once settles the atimes (relatime), so both backups store the same.
    let source_dump = tree_dump(&src);
    let repo = s.path("over-ssh");
    let c = |args: &[&str]| {
        let mut c = sshd.cmd(&s, "plain", &repo);
        c.args(args);
        c
    };
    ok(&mut c(&["init", "--encryption", "repokey"]));
    s.init("repokey");
    ok(c(&["create", "tree"]).arg(&src));
    s.ok(&["create", "tree", src.to_str().unwrap()]);
    let (remote, local) = (s.path("from-ssh"), s.path("from-local"));
    for d in [&remote, &local] {
        std::fs::create_dir(d).unwrap();
    }
    ok(c(&["extract", "tree", "--sparse", "--directory"]).arg(&remote));
    s.ok(&[
        "extract",
        "tree",
        "--sparse",
        "--directory",
        local.to_str().unwrap(),
    ]);
    assert_dumps_equal(
        &tree_dump(&local),
        &tree_dump(&remote),
        "ssh vs local extract",
    );
    assert_dumps_equal(&source_dump, &tree_dump(&remote), "source vs ssh extract");
    let over_ssh = ok(&mut c(&["export-tar", "tree", "-"])).stdout;
    assert!(over_ssh.len() > 10240, "a real tar stream");
    assert!(
        over_ssh == s.ok(&["export-tar", "tree", "-"]).stdout,
        "export-tar over ssh is byte-identical"
    );
}

#[test]
fn both_backends_conform() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(&LocalDir::new(dir.path()));

    let sshd = Sshd::start();
    let path = dir.path().join("over-ssh");
    std::env::set_var("PROXBORG_RSH", sshd.rsh("plain"));
    std::env::set_var("PROXBORG_REMOTE_PATH", BIN);
    let b = proxborg::remote::client::SshBackend::connect(SshUrl {
        user: Some("root".into()),
        host: "127.0.0.1".into(),
        port: Some(sshd.port),
        path: path.display().to_string(),
    })
    .unwrap();
    conformance::run(&b);
    assert!(b.canonical_location().starts_with("ssh://127.0.0.1:"));
    assert!(!b.append_only());
    drop(b);
    assert!(PathBuf::from(&path).join("config").exists());
}
