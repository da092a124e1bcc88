//! `s3:` repositories on a real three-node Garage cluster on 127.0.0.1 (tests/support/garage.rs):
//! the backend conformance suite, the metadata-rich tree round trip against a local repository,
//! the settings file's `repo:` and credentials file, and faults (a node killed mid-backup, the
//! whole endpoint stopped mid-backup, a wrong secret).

mod common;
#[path = "support/garage.rs"]
mod garage;

use common::*;
use garage::Garage;
use proxborg::repo::backend::s3::S3Backend;
use proxborg::repo::backend::{conformance, Backend};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn backend(g: &Garage, bucket: &str) -> S3Backend {
    g.backend(0, bucket)
}

/// A proxborg command on the repository `url`, with the cluster's credentials.
fn cmd(g: &Garage, s: &Scratch, url: &str) -> Command {
    let mut c = s.cmd();
    c.env("PROXBORG_REPO", url);
    g.env(&mut c);
    c
}

fn ok(c: &mut Command) -> Output {
    let out = run(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    out
}

fn one_line_error(out: &Output, says: &str) -> String {
    let err = stderr(out);
    assert_eq!(code(out), 2, "{err}");
    assert!(
        err.contains(says) && err.trim_end().lines().count() == 1,
        "expected one line with {says:?}: {err}"
    );
    err
}

fn info_json(c: &mut Command, archive: &str) -> serde_json::Value {
    let out = ok(c.args(["info", archive, "--json"]));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_s3_backend_conforms_and_init_creates_the_bucket() {
    let g = Garage::start();
    let b = backend(&g, "conformance/some/prefix");
    assert!(b.create_bucket_if_missing().unwrap(), "bucket created");
    assert!(
        !b.create_bucket_if_missing().unwrap(),
        "and found next time"
    );
    conformance::run(&b);
    assert_eq!(
        b.location(),
        format!(
            "s3:http://127.0.0.1:{}/conformance/some/prefix",
            g.nodes[0].s3_port
        )
    );
    // The prefix keeps repositories in one bucket apart.
    let other = backend(&g, "conformance/other");
    assert_eq!(other.list("data").unwrap(), Vec::<String>::new());
}

#[test]
fn the_metadata_rich_tree_round_trips_through_s3_as_through_a_local_repository() {
    let g = Garage::start();
    let s = Scratch::new();
    let src = s.path("src");
    build_tree(&src, 0);
    // Reading every file once now settles the atimes (relatime), so both backups below store
    // the same ones and their tar streams can be compared byte for byte.
    let source_dump = tree_dump(&src);
    let url = g.url(0, "roundtrip/pve1");
    let s3 = |args: &[&str]| {
        let mut c = cmd(&g, &s, &url);
        c.args(args);
        c
    };
    let out = ok(&mut s3(&["init", "--encryption", "repokey"]));
    assert!(
        stderr(&out).contains("Created bucket roundtrip"),
        "{}",
        stderr(&out)
    );
    s.init("repokey");
    ok(s3(&["create", "tree"]).arg(&src));
    s.ok(&["create", "tree", src.to_str().unwrap()]);

    let from_s3 = s.path("from-s3");
    let from_local = s.path("from-local");
    for d in [&from_s3, &from_local] {
        std::fs::create_dir(d).unwrap();
    }
    ok(s3(&["extract", "tree", "--sparse", "--directory"]).arg(&from_s3));
    s.ok(&[
        "extract",
        "tree",
        "--sparse",
        "--directory",
        from_local.to_str().unwrap(),
    ]);
    assert_dumps_equal(
        &tree_dump(&from_local),
        &tree_dump(&from_s3),
        "extract from S3 vs from the local repository",
    );
    assert_dumps_equal(&source_dump, &tree_dump(&from_s3), "source vs S3 extract");

    let tar_s3 = ok(&mut s3(&["export-tar", "tree", "-"])).stdout;
    let tar_local = s.ok(&["export-tar", "tree", "-"]).stdout;
    assert!(tar_s3.len() > 10240, "a real tar stream");
    assert!(
        tar_s3 == tar_local,
        "export-tar through S3 is byte-identical"
    );

    // The other commands on the same repository.
    let listed = String::from_utf8(ok(&mut s3(&["list"])).stdout).unwrap();
    assert!(listed.contains("tree"), "{listed}");
    ok(&mut s3(&["check", "--verify-data"]));
    std::fs::write(src.join("added-later"), b"new file\n").unwrap();
    ok(s3(&["create", "tree2"]).arg(&src));
    ok(&mut s3(&["delete", "tree"]));
    ok(&mut s3(&["compact"]));
    ok(&mut s3(&["check", "--verify-data"]));
    let listed = String::from_utf8(ok(&mut s3(&["list"])).stdout).unwrap();
    assert!(
        !listed.contains("tree ") && listed.contains("tree2"),
        "{listed}"
    );
}

#[test]
fn the_settings_file_names_an_s3_repository_and_its_credentials_file() {
    let g = Garage::start();
    let s = Scratch::new();
    let creds = s.path("s3.credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            g.key_id, g.secret
        ),
    )
    .unwrap();
    let conf = s.path("proxborg.conf");
    std::fs::write(
        &conf,
        format!(
            "repo: {}\ns3-credentials-file: {}\ns3-region: {}\n",
            g.url(1, "fromsettings"),
            creds.display(),
            garage::REGION
        ),
    )
    .unwrap();
    let c = |args: &[&str]| {
        let mut c = s.cmd();
        c.env_remove("PROXBORG_REPO")
            .env("PROXBORG_CONFIG", &conf)
            .args(args);
        c
    };
    ok(&mut c(&["init", "--encryption", "none"]));
    let out = create_stdin_with(c(&[]), "stream", &noise(3 << 20, 5));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let back = ok(&mut c(&["extract", "stream", "--stdout"])).stdout;
    assert!(back == noise(3 << 20, 5), "byte-exact");
    // Without any credentials: one line saying where they come from.
    std::fs::write(&conf, format!("repo: {}\n", g.url(1, "fromsettings"))).unwrap();
    let out = run(&mut c(&["list"]));
    one_line_error(&out, "AWS_ACCESS_KEY_ID");
}

#[test]
fn a_wrong_secret_is_one_line_naming_the_object_and_the_servers_answer() {
    let g = Garage::start();
    let s = Scratch::new();
    let url = g.url(0, "secrets");
    ok(cmd(&g, &s, &url).args(["init", "--encryption", "none"]));
    let out = run(cmd(&g, &s, &url)
        .env("AWS_SECRET_ACCESS_KEY", "0".repeat(64))
        .arg("list"));
    let err = one_line_error(&out, "secrets/config");
    assert!(err.contains("HTTP 403"), "{err}");
}

#[test]
fn a_storage_node_killed_mid_backup_changes_nothing() {
    let mut g = Garage::start();
    let s = Scratch::new();
    let url = g.url(0, "nodekill");
    ok(cmd(&g, &s, &url).args(["init", "--encryption", "repokey"]));
    let (child, feeder) = spawn_stream_backup(cmd(&g, &s, &url), "survives", 120);
    g.wait_for_a_pack("nodekill");
    // Node 2 (not the endpoint) dies and comes back while the backup goes on.
    g.kill(2);
    std::thread::sleep(Duration::from_secs(2));
    g.restart(2);
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    ok(cmd(&g, &s, &url).args(["check", "--verify-data"]));
    let expected = noise_stream(120);
    let back = ok(cmd(&g, &s, &url).args(["extract", "survives", "--stdout"])).stdout;
    assert!(back == expected, "byte-exact after a node's crash");
}

#[test]
fn a_stopped_endpoint_is_one_line_and_the_rerun_reuses_what_was_uploaded() {
    let mut g = Garage::start();
    let s = Scratch::new();
    let url = g.url(0, "endpointdown");
    ok(cmd(&g, &s, &url).args(["init", "--encryption", "none"]));
    let b = backend(&g, "endpointdown");
    let (child, feeder) = spawn_stream_backup(cmd(&g, &s, &url), "interrupted", 300);
    let deadline = Instant::now() + Duration::from_secs(180);
    while b.list("index").unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no index file arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The node proxborg talks to goes away for good (the others stay up).
    g.kill(0);
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let err = one_line_error(&out, &format!("127.0.0.1:{}", g.nodes[0].s3_port));
    assert!(err.contains("attempts"), "retried before giving up: {err}");
    g.restart(0);
    ok(cmd(&g, &s, &url).arg("check"));
    // The rerun of the same data stores less than all of it: what the indexed packs hold is
    // reused.
    let (child, feeder) = spawn_stream_backup(cmd(&g, &s, &url), "rerun", 300);
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let info = info_json(&mut cmd(&g, &s, &url), "rerun");
    let original = info["original_size"].as_u64().unwrap();
    let added = info["added_size"].as_u64().unwrap();
    eprintln!("rerun after the endpoint died: {added} of {original} bytes new");
    assert!(added < original, "the rerun reused uploaded packs: {info}");
    ok(cmd(&g, &s, &url).args(["check", "--verify-data"]));
}

#[test]
fn an_unchanged_backup_moves_little_over_the_wire_thanks_to_the_caches() {
    let g = Garage::start();
    let s = Scratch::new();
    let src = s.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..400u64 {
        std::fs::write(src.join(format!("f{i}")), noise(24 << 10, i)).unwrap();
    }
    let url = g.url(0, "unchanged");
    ok(cmd(&g, &s, &url).args(["init", "--encryption", "repokey"]));
    let transferred = |name: &str| {
        let out = ok(cmd(&g, &s, &url).args(["create", "--json", name]).arg(&src));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t = &v["transferred"];
        (t["sent"].as_u64().unwrap(), t["received"].as_u64().unwrap())
    };
    let (first_sent, _) = transferred("first");
    assert!(first_sent > 9 << 20, "the data went up: {first_sent}");
    let b = backend(&g, "unchanged");
    for name in ["second", "third"] {
        let (sent, received) = transferred(name);
        eprintln!("unchanged backup {name}: {sent} bytes sent, {received} received");
        assert!(
            sent < 1 << 20 && received < 1 << 20,
            "{name}: {sent} sent, {received} received"
        );
        // Without the metadata cache every index and archive file would come down again.
        let metadata: u64 = ["index", "archives"]
            .iter()
            .flat_map(|d| b.list(d).unwrap())
            .map(|k| b.size(&k).unwrap())
            .sum();
        assert!(
            received < metadata / 2,
            "{received} received, {metadata} of index and archive files"
        );
    }
    // The cached index and archive files are what the remote has: a check agrees.
    ok(cmd(&g, &s, &url).args(["check", "--verify-data"]));
}

/// `proxborg sync SRC DST ARGS --json` with SRC's passphrase from PROXBORG_SRC_PASSPHRASE.
fn sync(
    g: &Garage,
    s: &Scratch,
    src: &str,
    dst: &str,
    src_pass: &str,
    dst_pass: &str,
) -> serde_json::Value {
    let mut c = s.cmd();
    g.env(&mut c);
    c.env_remove("PROXBORG_REPO")
        .env("PROXBORG_PASSPHRASE", dst_pass)
        .env("PROXBORG_SRC_PASSPHRASE", src_pass)
        .args(["sync", src, dst, "--all", "--json"]);
    let out = ok(&mut c);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sync_local_to_s3_to_local_extracts_identically_and_a_second_sync_copies_nothing() {
    let g = Garage::start();
    let s = Scratch::new();
    let tree = s.path("tree");
    build_tree(&tree, 0);
    s.init("repokey");
    s.ok(&["create", "tree-1", tree.to_str().unwrap()]);
    assert_eq!(code(&s.create_stdin("noise-1", &noise(5 << 20, 3))), 0);
    let local = s.repo().display().to_string();
    let offsite = g.url(0, "offsite");
    let back = s.path("back").display().to_string();
    // The offsite copy has its own key and passphrase but the local repository's chunk ids.
    for (url, pass) in [(&offsite, "offsite pass"), (&back, "back pass")] {
        let mut c = cmd(&g, &s, url);
        c.env("PROXBORG_PASSPHRASE", pass)
            .env("PROXBORG_SRC_PASSPHRASE", PASS)
            .args([
                "init",
                "--encryption",
                "repokey",
                "--chunker-params-from",
                &local,
            ]);
        ok(&mut c);
    }
    let first = sync(&g, &s, &local, &offsite, PASS, "offsite pass");
    assert_eq!(first["archives_copied"], 2, "{first}");
    let again = sync(&g, &s, &local, &offsite, PASS, "offsite pass");
    assert_eq!(
        (
            again["archives_copied"].as_u64(),
            again["blobs_copied"].as_u64()
        ),
        (Some(0), Some(0)),
        "{again}"
    );
    sync(&g, &s, &offsite, &back, "offsite pass", "back pass");
    for (url, pass) in [(&offsite, "offsite pass"), (&back, "back pass")] {
        for archive in ["tree-1", "noise-1"] {
            let mut c = cmd(&g, &s, url);
            c.env("PROXBORG_PASSPHRASE", pass)
                .args(["export-tar", archive, "-"]);
            let copy = ok(&mut c).stdout;
            let original = s.ok(&["export-tar", archive, "-"]).stdout;
            assert!(copy == original, "{archive} through {url} is identical");
        }
        let mut c = cmd(&g, &s, url);
        c.env("PROXBORG_PASSPHRASE", pass)
            .args(["check", "--verify-data"]);
        ok(&mut c);
    }
}
