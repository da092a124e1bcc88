//! Guests of the simulated PVE node backed up into a real three-node Garage cluster: two
//! "hosts" (proxborg in its own UTS namespace with its own host name) sharing one bucket while
//! a storage node dies and comes back, cross-host dedup, and the S3 endpoint dying in the
//! middle of a container backup. The node has its own directory and pool.

mod common;
#[path = "support/garage.rs"]
mod garage;
#[path = "support/node.rs"]
mod node;

use common::*;
use garage::Garage;
use node::Node;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

const SIM_DIR: &str = "/var/lib/proxborg-sim-s3";

fn node() -> (MutexGuard<'static, ()>, &'static Node) {
    static LOCK: Mutex<()> = Mutex::new(());
    static NODE: OnceLock<Node> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let node = NODE.get_or_init(|| Node::up(SIM_DIR, "pxs3"));
    node.heal();
    (guard, node)
}

/// proxborg on `url` as run on host `hostname`: a UTS namespace of its own whose host name is
/// set, with the node's environment and the cluster's credentials.
fn on_host(node: &Node, s: &Scratch, g: &Garage, url: &str, hostname: &str) -> Command {
    let template = node.cmd(s);
    let mut c = Command::new("unshare");
    c.args([
        "--uts",
        "sh",
        "-c",
        "hostname \"$0\" && exec \"$@\"",
        hostname,
    ])
    .arg(template.get_program());
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.env("PROXBORG_REPO", url);
    g.env(&mut c);
    c
}

fn archive_of(out: &Output) -> String {
    let results: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON results ({e}): {}", stderr(out)));
    results[0]["archive"].as_str().unwrap().to_string()
}

fn info(node: &Node, s: &Scratch, g: &Garage, url: &str, archive: &str) -> serde_json::Value {
    let out = run(on_host(node, s, g, url, "pve1").args(["info", archive, "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn two_hosts_share_a_bucket_while_a_storage_node_dies_and_dedup_across_hosts() {
    let (_g, node) = node();
    let mut g = Garage::start();
    let s = Scratch::new();
    let url = g.url(0, "cluster/pve");
    let out = run(on_host(node, &s, &g, &url, "pve1").args(["init", "--encryption", "repokey"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Enough data in CT 100's mp0 that the backups overlap with the node's death.
    let mp0 = node.mountpoint("data/subvol-100-disk-1");
    let big = mp0.join("cluster.bin");
    std::fs::write(&big, noise(48 << 20, 77)).unwrap();
    let spawn = |host: &str, guest: &str| {
        on_host(node, &s, &g, &url, host)
            .args([guest, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn("pve1", "100:");
    let second = spawn("pve2", "101:");
    // A storage node that neither talks to dies once data flows, and comes back.
    g.wait_for_a_pack("cluster/pve");
    g.kill(2);
    std::thread::sleep(Duration::from_secs(2));
    g.restart(2);
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    std::fs::remove_file(&big).unwrap();
    assert!(code(&first) <= 1, "pve1: {}", stderr(&first));
    assert!(code(&second) <= 1, "pve2: {}", stderr(&second));
    assert_eq!(node.leftovers(), "", "snapshots or clones left");
    let ct100 = archive_of(&first);
    assert_eq!(info(node, &s, &g, &url, &ct100)["hostname"], "pve1");
    assert_eq!(
        info(node, &s, &g, &url, &archive_of(&second))["hostname"],
        "pve2"
    );
    let out = run(on_host(node, &s, &g, &url, "pve2").args(["check", "--verify-data"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // The same container from the other host: its chunks are already in the bucket.
    std::fs::write(&big, noise(48 << 20, 77)).unwrap();
    let again = run(on_host(node, &s, &g, &url, "pve2").args(["100:", "--json"]));
    std::fs::remove_file(&big).unwrap();
    assert!(code(&again) <= 1, "{}", stderr(&again));
    let i = info(node, &s, &g, &url, &archive_of(&again));
    let (added, original) = (
        i["added_size"].as_u64().unwrap(),
        i["original_size"].as_u64().unwrap(),
    );
    eprintln!("CT 100 again from pve2: {added} of {original} bytes added");
    assert!(
        added * 50 < original,
        "cross-host dedup: {added} of {original} added"
    );
}

#[test]
fn the_s3_endpoint_dying_mid_backup_releases_the_container_and_the_rerun_completes() {
    let (_g, node) = node();
    let mut g = Garage::start();
    let s = Scratch::new();
    let url = g.url(0, "endpoint/pve");
    let out = run(on_host(node, &s, &g, &url, "pve1").args(["init", "--encryption", "none"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mp0 = node.mountpoint("data/subvol-100-disk-1");
    let big = mp0.join("endpoint.bin");
    let data = noise(64 << 20, 78);
    std::fs::write(&big, &data).unwrap();
    let child = on_host(node, &s, &g, &url, "pve1")
        .args(["100:"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    g.wait_for_a_pack("endpoint/pve");
    g.kill(0);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("attempts"),
        "no clear error naming the retries: {err}"
    );
    assert_eq!(node.leftovers(), "", "snapshots or clones left: {err}");
    let state = std::fs::read_to_string(format!("{SIM_DIR}/state/100")).unwrap();
    assert_eq!(state.trim(), "RUNNING", "CT 100 left frozen: {err}");
    g.restart(0);
    let out = run(on_host(node, &s, &g, &url, "pve1").args(["100:", "--json"]));
    std::fs::remove_file(&big).unwrap();
    assert!(code(&out) <= 1, "{}", stderr(&out));
    let archive = archive_of(&out);
    let back = run(on_host(node, &s, &g, &url, "pve1").args([
        "extract",
        &archive,
        "srv/data/endpoint.bin",
        "--stdout",
    ]));
    assert!(
        back.stdout == data,
        "the file read back differs: {}",
        stderr(&back)
    );
    let out = run(on_host(node, &s, &g, &url, "pve1").args(["check", "--verify-data"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
