//! The simulated node's `qm` (pve/lib/qm.py), as far as zfs-fuse lets it be checked: run state
//! (`status`, `start`, `stop`), `qm guest cmd` with the outputs and errors of the real CLI and
//! the agent log a test reads, and that `qm snapshot` of a VM on zvols refuses clearly (zfs-fuse
//! has no zvols; snapshots and rollbacks are for the tests/openzfs tier). The node has its own
//! directory and pool; every test uses its own VMID.

mod common;
#[path = "support/node.rs"]
mod node;
use common::*;
use node::Node;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, MutexGuard, OnceLock};

const SIM_DIR: &str = "/var/lib/proxborg-sim-qm";

fn node() -> (MutexGuard<'static, ()>, &'static Node) {
    static LOCK: Mutex<()> = Mutex::new(());
    static NODE: OnceLock<Node> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let node = NODE.get_or_init(|| Node::up(SIM_DIR, "pxqm"));
    (guard, node)
}

impl Node {
    fn path(&self, rel: &str) -> PathBuf {
        Path::new(&self.get("PROXBORG_SIM_DIR")).join(rel)
    }

    fn qm(&self, args: &[&str]) -> Output {
        let mut c = std::process::Command::new(self.path("bin/qm"));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.args(args).output().expect("running the simulated qm")
    }

    /// A fresh VM `vmid` with this config body, in state `state`, with no agent state or log.
    fn vm(&self, vmid: u32, config: &str, state: &str) {
        let conf = self.path(&format!("etc/pve/qemu-server/{vmid}.conf"));
        std::fs::write(&conf, config).unwrap();
        std::fs::write(self.path(&format!("state/{vmid}")), format!("{state}\n")).unwrap();
        let _ = std::fs::remove_file(self.path(&format!("state/{vmid}.agent")));
        let _ = std::fs::remove_file(self.agent_log(vmid));
    }

    fn agent_log(&self, vmid: u32) -> PathBuf {
        self.path(&format!("log/qm-agent-{vmid}.log"))
    }

    /// The agent log as (origin, command, outcome), checking that the times are ordered.
    fn agent_calls(&self, vmid: u32) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(self.agent_log(vmid)).unwrap_or_default();
        let mut last = 0.0f64;
        text.lines()
            .map(|l| {
                let mut f = l.splitn(4, ' ');
                let t: f64 = f.next().unwrap().parse().expect("a time.time() stamp");
                assert!(
                    t >= last && t > 1.0e9,
                    "agent log times out of order: {text}"
                );
                last = t;
                let mut next = || f.next().unwrap().to_string();
                (next(), next(), next())
            })
            .collect()
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit 0 with exactly this stdout.
fn ok(o: &Output, stdout: &str) {
    assert_eq!(code(o), 0, "stderr: {}", stderr(o));
    assert_eq!(out(o), stdout);
}

/// PVE's CLI on an API error: the message alone on stderr, exit code 255 (a Perl die).
fn fails(o: &Output, msg: &str) {
    assert_eq!(code(o), 255, "stdout: {} stderr: {}", out(o), stderr(o));
    assert_eq!(stderr(o), format!("{msg}\n"));
}

const ZVOL_VM: &str = "agent: 1\n\
    ide2: none,media=cdrom\n\
    name: zv\n\
    scsi0: local-zfs:vm-VMID-disk-0,iothread=1,size=64M\n\
    virtio1: local-zfs:vm-VMID-disk-1,size=16M\n";

fn zvol_vm(vmid: u32, agent: &str) -> String {
    ZVOL_VM
        .replace("VMID", &vmid.to_string())
        .replace("agent: 1\n", agent)
}

#[test]
fn status_start_stop() {
    let (_g, node) = node();
    ok(&node.qm(&["status", "200"]), "status: running\n");
    node.vm(310, &zvol_vm(310, "agent: 1\n"), "STOPPED");
    ok(&node.qm(&["status", "310"]), "status: stopped\n");
    ok(&node.qm(&["start", "310"]), "");
    ok(&node.qm(&["status", "310"]), "status: running\n");
    assert_eq!(
        std::fs::read_to_string(node.path("state/310")).unwrap(),
        "RUNNING\n"
    );
    fails(&node.qm(&["start", "310"]), "VM 310 already running");
    let verbose = out(&node.qm(&["status", "310", "--verbose"]));
    assert!(verbose.contains("qmpstatus: running\n"), "{verbose}");
    assert!(verbose.contains("name: zv\n"), "{verbose}");
    ok(&node.qm(&["stop", "310"]), "");
    ok(&node.qm(&["status", "310"]), "status: stopped\n");
    // stopping a stopped VM is no error (_do_vm_stop returns early)
    ok(&node.qm(&["stop", "310"]), "");
    // a locked config refuses a start, as check_lock does
    let conf = node.path("etc/pve/qemu-server/310.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{text}lock: rollback\n")).unwrap();
    fails(&node.qm(&["start", "310"]), "VM is locked (rollback)");
    fails(
        &node.qm(&["status", "999"]),
        "Configuration file 'nodes/pve/qemu-server/999.conf' does not exist",
    );
    // a container's VMID is no VM
    fails(
        &node.qm(&["status", "100"]),
        "Configuration file 'nodes/pve/qemu-server/100.conf' does not exist",
    );
}

#[test]
fn guest_cmd_outputs_and_agent_log() {
    let (_g, node) = node();
    node.vm(311, &zvol_vm(311, "agent: 1\n"), "RUNNING");
    // ping returns {}: the CLI prints nothing for an empty hash
    ok(&node.qm(&["guest", "cmd", "311", "ping"]), "");
    // scalars are printed as they are, not as JSON
    ok(
        &node.qm(&["guest", "cmd", "311", "fsfreeze-status"]),
        "thawed\n",
    );
    // one frozen filesystem per disk (the cdrom is none)
    ok(&node.qm(&["guest", "cmd", "311", "fsfreeze-freeze"]), "2\n");
    assert_eq!(
        std::fs::read_to_string(node.path("state/311.agent")).unwrap(),
        "frozen\n"
    );
    let frozen = "VM 311 qga command 'guest-fsfreeze-freeze' failed - Command \
                  guest-fsfreeze-freeze has been disabled: the agent is in frozen state";
    fails(
        &node.qm(&["guest", "cmd", "311", "fsfreeze-freeze"]),
        frozen,
    );
    ok(
        &node.qm(&["guest", "cmd", "311", "fsfreeze-status"]),
        "frozen\n",
    );
    ok(&node.qm(&["guest", "cmd", "311", "fsfreeze-thaw"]), "2\n");
    // thawing what is not frozen thaws nothing
    ok(&node.qm(&["guest", "cmd", "311", "fsfreeze-thaw"]), "0\n");
    let calls = node.agent_calls(311);
    let expect = [
        ("ping", "{}".to_string()),
        ("fsfreeze-status", "\"thawed\"".to_string()),
        ("fsfreeze-freeze", "2".to_string()),
        ("fsfreeze-freeze", format!("error: {frozen}")),
        ("fsfreeze-status", "\"frozen\"".to_string()),
        ("fsfreeze-thaw", "2".to_string()),
        ("fsfreeze-thaw", "0".to_string()),
    ];
    assert_eq!(calls.len(), expect.len(), "{calls:?}");
    for ((origin, cmd, outcome), (want_cmd, want_outcome)) in calls.iter().zip(expect.iter()) {
        assert_eq!(origin, "guest-cmd");
        assert_eq!(cmd, want_cmd);
        assert_eq!(outcome, want_outcome);
    }
    // a stop ends the freeze: after a "reboot" the guest is thawed
    ok(&node.qm(&["guest", "cmd", "311", "fsfreeze-freeze"]), "2\n");
    ok(&node.qm(&["stop", "311"]), "");
    ok(&node.qm(&["start", "311"]), "");
    ok(
        &node.qm(&["guest", "cmd", "311", "fsfreeze-status"]),
        "thawed\n",
    );
}

#[test]
fn guest_cmd_errors() {
    let (_g, node) = node();
    // no agent key at all
    node.vm(312, &zvol_vm(312, ""), "RUNNING");
    fails(
        &node.qm(&["guest", "cmd", "312", "ping"]),
        "No QEMU guest agent configured",
    );
    // `agent: 0` is "configured" but QEMU was started without the agent's socket
    node.vm(312, &zvol_vm(312, "agent: 0\n"), "RUNNING");
    fails(
        &node.qm(&["guest", "cmd", "312", "fsfreeze-freeze"]),
        "QEMU guest agent is not running",
    );
    // the default key of the property string is `enabled`
    node.vm(
        312,
        &zvol_vm(312, "agent: enabled=1,freeze-fs=1\n"),
        "STOPPED",
    );
    fails(
        &node.qm(&["guest", "cmd", "312", "fsfreeze-freeze"]),
        "VM 312 is not running",
    );
    ok(&node.qm(&["start", "312"]), "");
    ok(&node.qm(&["guest", "cmd", "312", "fsfreeze-freeze"]), "2\n");
    ok(&node.qm(&["guest", "cmd", "312", "fsfreeze-thaw"]), "2\n");
    // the agent service in the guest does not answer
    std::fs::write(node.path("state/312.agent"), "down\n").unwrap();
    fails(
        &node.qm(&["guest", "cmd", "312", "ping"]),
        "QEMU guest agent is not running",
    );
    let calls: Vec<(String, String)> = node
        .agent_calls(312)
        .into_iter()
        .map(|(_, c, o)| (c, o))
        .collect();
    assert_eq!(
        calls,
        [
            ("fsfreeze-freeze", "error: VM 312 is not running"),
            ("fsfreeze-freeze", "2"),
            ("fsfreeze-thaw", "2"),
            ("ping", "error: QEMU guest agent is not running"),
        ]
        .map(|(c, o)| (c.to_string(), o.to_string()))
    );
    // a command outside the API's enumeration is a parameter error
    let o = node.qm(&["guest", "cmd", "312", "fsfreeze"]);
    assert_eq!(code(&o), 255);
    assert!(
        stderr(&o).starts_with(
            "400 Parameter verification failed.\ncommand: value 'fsfreeze' does not have a \
             value in the enumeration 'fsfreeze-freeze, fsfreeze-status, fsfreeze-thaw, fstrim,"
        ),
        "{}",
        stderr(&o)
    );
    fails(
        &node.qm(&["guest", "cmd", "998", "ping"]),
        "Configuration file 'nodes/pve/qemu-server/998.conf' does not exist",
    );
}

#[test]
fn snapshot_of_zvols_is_refused_on_zfs_fuse() {
    let (_g, node) = node();
    assert!(
        !Path::new("/sys/module/zfs").exists(),
        "this test checks the zfs-fuse node; on OpenZFS qm snapshot works on zvols"
    );
    let config = zvol_vm(313, "agent: 1\n");
    node.vm(313, &config, "RUNNING");
    fails(
        &node.qm(&["snapshot", "313", "before"]),
        "local-zfs:vm-313-disk-0: zvols are not available on zfs-fuse (pve/sim)",
    );
    // refused before the config was touched (no lock, no [before] section) or the agent asked
    let conf = node.path("etc/pve/qemu-server/313.conf");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), config);
    assert!(node.agent_calls(313).is_empty());
    // a raw image on dir storage has no snapshot feature (VM 200)
    fails(
        &node.qm(&["snapshot", "200", "before"]),
        "snapshot feature is not available",
    );
    fails(
        &node.qm(&["rollback", "313", "before"]),
        "snapshot 'before' does not exist",
    );
    fails(
        &node.qm(&["delsnapshot", "313", "before"]),
        "snapshot 'before' does not exist",
    );
}
