//! The simulated PVE node (`pve/sim`) for end-to-end tests: each test file brings it up in its
//! own directory and pool, and its tests take turns on it (one node, one lock).

#![allow(dead_code)]
use super::common::{sh, Scratch};
use std::path::PathBuf;
use std::process::Command;

pub struct Node {
    pub env: Vec<(String, String)>,
    dir: &'static str,
}

fn sim() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/pve/sim")
}

impl Node {
    /// `pve/sim up DIR` with pool `pool`, its exported environment kept.
    pub fn up(dir: &'static str, pool: &str) -> Node {
        let out = Command::new(sim())
            .args(["up", dir])
            .env("PROXBORG_SIM_POOL", pool)
            .output()
            .expect("running pve/sim up");
        assert!(
            out.status.success(),
            "pve/sim up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut env = Vec::new();
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let Some(rest) = line.strip_prefix("export ") else {
                continue;
            };
            let (k, v) = rest.split_once('=').unwrap();
            let v = sh(&format!("printf %s {v}"));
            env.push((k.to_string(), v));
        }
        Node { env, dir }
    }

    pub fn get(&self, k: &str) -> String {
        self.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    }

    pub fn pool(&self) -> String {
        self.get("PROXBORG_SIM_POOL")
    }

    /// `proxborg` on the scratch's repository with the node's environment.
    pub fn cmd(&self, s: &Scratch) -> Command {
        let mut c = s.cmd();
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn sh(&self, script: &str) -> String {
        let exports: String = self
            .env
            .iter()
            .map(|(k, v)| format!("export {k}='{v}'; "))
            .collect();
        sh(&format!("{exports}{script}"))
    }

    pub fn mountpoint(&self, dataset: &str) -> PathBuf {
        PathBuf::from(
            self.sh(&format!(
                "zfs get -H -o value mountpoint {}/{dataset}",
                self.pool()
            ))
            .trim(),
        )
    }

    /// Wakes and remounts the node's zfs-fuse mounts (`pve/sim heal`): zfs-fuse can hang or
    /// lose a mount when a process with a request in flight is killed, as some tests do.
    /// Real OpenZFS needs none of this.
    pub fn heal(&self) {
        let out = Command::new(sim())
            .args(["heal", self.dir])
            .output()
            .expect("running pve/sim heal");
        assert!(
            out.status.success(),
            "pve/sim heal failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Snapshots and clones proxborg made and did not remove.
    pub fn leftovers(&self) -> String {
        self.sh("zfs list -H -o name -t all | grep -E 'proxborg-' || true")
    }
}
