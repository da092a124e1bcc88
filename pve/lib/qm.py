"""Simulated `qm` of the pve/sim node: `status`, `start`, `stop`, `guest cmd`, `snapshot`,
`rollback`, `delsnapshot` (docs/QM-GUEST.md has the PVE behaviour this follows, with sources).

There is no QEMU and no guest. The run state is DIR/state/<vmid> (RUNNING/STOPPED, as for
containers); the guest agent is DIR/state/<vmid>.agent: `thawed` (or no file), `frozen`, or
`down` (a test writes it: the agent service in the guest is not running). Every `qm guest cmd`
(also one refused before it reaches the agent) and every agent command of `qm snapshot` is
appended to DIR/log/qm-agent-<vmid>.log as
`<time.time()> <origin> <command> <outcome>`, origin `guest-cmd` (qm guest cmd) or `snapshot`
(the freeze qm snapshot does itself), outcome the printed result (`{}`, `2`, `"frozen"`) or
`error: <message>`. A freeze reports one frozen filesystem per disk of the config.

Snapshots work on zfspool zvols only, with the real `zfs` (so only on real OpenZFS: on zfs-fuse
the volume resolution fails before the config is touched), and follow AbstractConfig's
snapshot_create/snapshot_rollback/snapshot_delete: the `[snap]` section, `lock`, `snapstate`,
`parent`, one `zfs snapshot` per disk, the rollback pre-check on newer *snapshots* only, then a
plain `zfs rollback` (no -r), which fails on a newer bookmark as on a PVE host.

Like PVE's CLI, worker output (task log) goes to stdout and a failure prints the error alone on
stderr with exit code 255.
"""
import fcntl
import json
import os
import re
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pvesim import (Fail, Node, decode_text, encode_text, resolve_volume, run_main,  # noqa: E402
                    write_file)

DRIVE_KEYS = ([f"ide{i}" for i in range(4)] + [f"sata{i}" for i in range(6)]
              + [f"scsi{i}" for i in range(31)] + [f"virtio{i}" for i in range(16)]
              + ["efidisk0", "tpmstate0"])
BOOL = {"1": True, "true": True, "yes": True, "on": True,
        "0": False, "false": False, "no": False, "off": False}
# PVE::API2::Qemu::Agent $guest_agent_commands (the enum of `qm guest cmd`); pve/sim answers
# only the first four.
SIMULATED_AGENT_CMDS = ["fsfreeze-freeze", "fsfreeze-status", "fsfreeze-thaw", "ping"]
AGENT_CMDS = sorted(SIMULATED_AGENT_CMDS + [
    "fstrim", "get-fsinfo", "get-host-name", "get-memory-block-info", "get-memory-blocks",
    "get-osinfo", "get-time", "get-timezone", "get-users", "get-vcpus", "info",
    "network-get-interfaces", "shutdown", "suspend-disk", "suspend-hybrid", "suspend-ram"])
SNAP_COPY_SKIP = {"snapshots", "snapstate", "snaptime", "vmstate", "lock", "digest", "description"}


def param_error(errors, usage):
    """PVE's parameter exception as the CLI prints it (RESTHandler::cli_handler)."""
    text = "400 Parameter verification failed.\n" + "".join(f"{k}: {v}\n" for k, v in errors)
    raise Fail(text + f"\nqm {usage}")


def parse_args(args, positional, usage, options=(), booleans=()):
    """PVE's get_options: positional args in order, `--key value`, booleans may stand alone."""
    pos, opts = [], {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and len(a) > 2:
            k, eq, v = a[2:].partition("=")
            if k not in options and k not in booleans:
                param_error([(k, "property is not defined in schema and the schema does not "
                              "allow additional properties")], usage)
            if not eq:
                if k in booleans and not (i + 1 < len(args) and args[i + 1].lower() in BOOL):
                    v = "1"
                elif i + 1 < len(args):
                    v = args[i + 1]
                    i += 1
                else:
                    param_error([(k, "missing value")], usage)
            if k in booleans:
                if v.lower() not in BOOL:
                    param_error([(k, f"type check ('boolean') failed - got '{v}'")], usage)
                v = BOOL[v.lower()]
            opts[k] = v
        else:
            pos.append(a)
        i += 1
    if len(pos) < len(positional):
        param_error([(positional[len(pos)], "property is missing and it is not optional")], usage)
    if len(pos) > len(positional):
        raise Fail(f"too many arguments\nqm {usage}")
    out = dict(zip(positional, pos))
    if "vmid" in out:
        v = out["vmid"]
        if not re.match(r"^\d+$", v):
            param_error([("vmid", f"type check ('integer') failed - got '{v}'")], usage)
        if not 100 <= int(v) <= 999999999:
            param_error([("vmid", "value must have a minimum value of 100")], usage)
        out["vmid"] = int(v)
    if "snapname" in out:
        s = out["snapname"]
        if not re.match(r"^[a-z][a-z0-9_\-]+$", s, re.I) or len(s) > 40:
            param_error([("snapname", f"invalid format - invalid configuration ID '{s}'")], usage)
    return out, opts


class VmConfig:
    """A qemu-server config (PVE-FACTS §5.3): description and keys of the current config,
    `[PENDING]`/`[special:*]` kept as raw text, snapshots as (description, keys)."""

    def __init__(self):
        self.description = []
        self.keys = {}
        self.raw_sections = []  # [(name, [lines])]: PENDING and special:*
        self.snapshots = {}  # name -> (description lines, keys)

    @classmethod
    def parse(cls, text, path):
        c = cls()
        desc, keys, raw = c.description, c.keys, None
        for n, line in enumerate(text.splitlines(), 1):
            m = re.match(r"^\[(PENDING|special:[a-z]+|[a-z][a-z0-9_\-]+)\]\s*$", line, re.I)
            if m:
                name = m.group(1)
                if name == "PENDING" or name.startswith("special:"):
                    raw = []
                    c.raw_sections.append((name, raw))
                else:
                    raw = None
                    desc, keys = [], {}
                    c.snapshots[name] = (desc, keys)
                continue
            if raw is not None:
                if line.strip():
                    raw.append(line)
                continue
            if not line.strip():
                continue
            if line.startswith("#"):
                desc.append(decode_text(line[1:]))
                continue
            m = re.match(r"^([a-z][a-z_\-]*\d*):\s*(.+?)\s*$", line)
            if not m:
                raise Fail(f"{path}:{n}: unable to parse config line {line!r}")
            keys[m.group(1)] = m.group(2)
        return c

    def render(self):
        """write_vm_config: description, sorted keys; [PENDING], [special:*], then the
        snapshots sorted by name, each after a blank line."""

        def block(desc, keys):
            return ("".join(f"#{encode_text(d)}\n" for d in desc)
                    + "".join(f"{k}: {keys[k]}\n" for k in sorted(keys)))

        out = block(self.description, self.keys)
        for name, lines in self.raw_sections:
            out += f"\n[{name}]\n" + "".join(line + "\n" for line in lines)
        for name in sorted(self.snapshots):
            out += f"\n[{name}]\n" + block(*self.snapshots[name])
        return out


class Vm:
    def __init__(self, node, vmid):
        self.node, self.vmid = node, vmid
        self.path = node.conf_path(vmid, "qemu")
        self.rel = f"nodes/{node.node}/qemu-server/{vmid}.conf"
        self.state_path = os.path.join(node.dir, "state", str(vmid))

    def load(self):
        """AbstractConfig::load_config."""
        try:
            with open(self.path) as f:
                return VmConfig.parse(f.read(), self.path)
        except FileNotFoundError:
            raise Fail(f"Configuration file '{self.rel}' does not exist")

    def save(self, conf):
        write_file(self.path, conf.render())

    def running(self):
        return self.node.state(self.vmid) != "STOPPED"

    def agent_state(self):
        try:
            with open(self.state_path + ".agent") as f:
                return f.read().strip() or "thawed"
        except FileNotFoundError:
            return "thawed"

    def set_agent_state(self, state):
        write_file(self.state_path + ".agent", state + "\n")

    def stop(self):
        """The QEMU process ends: the guest's filesystems are no longer frozen."""
        self.node.set_state(self.vmid, "STOPPED")
        if self.agent_state() == "frozen":
            self.set_agent_state("thawed")

    def start(self):
        self.node.set_state(self.vmid, "RUNNING")

    def log_agent(self, origin, cmd, outcome):
        os.makedirs(os.path.join(self.node.dir, "log"), exist_ok=True)
        with open(os.path.join(self.node.dir, "log", f"qm-agent-{self.vmid}.log"), "a") as f:
            f.write(f"{time.time():.6f} {origin} {cmd} {outcome}\n")


def lock(node, vmid):
    """lock_config: one qm at a time per guest (PVE: flock on /var/lock/qemu-server)."""
    d = os.path.join(node.dir, "run")
    os.makedirs(d, exist_ok=True)
    f = open(os.path.join(d, f"qm-{vmid}.lock"), "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def check_lock(conf):
    if conf.keys.get("lock"):
        raise Fail(f"VM is locked ({conf.keys['lock']})")


def parse_agent(value):
    """parse_guest_agent: {} unless enabled (the default key of the property string)."""
    if value is None:
        return {}
    out = {}
    for i, part in enumerate(value.split(",")):
        k, eq, v = part.partition("=")
        if not eq:
            k, v = "enabled", part
        out[k] = v
    if not BOOL.get(str(out.get("enabled", "0")).lower(), False):
        return {}
    return out


def should_fs_freeze(agent_value):
    """Agent::should_fs_freeze: `freeze-fs` (aliases freeze-fs-on-backup, guest-fsfreeze),
    default 1, only when the agent is enabled."""
    a = parse_agent(agent_value)
    if not a:
        return False
    for k in ("freeze-fs", "freeze-fs-on-backup", "guest-fsfreeze"):
        if k in a:
            return BOOL.get(a[k].lower(), True)
    return True


def drives(keys):
    """(key, volid, options) of each drive of a config section, in PVE's drive order."""
    out = []
    for k in DRIVE_KEYS:
        if k not in keys:
            continue
        parts = keys[k].split(",")
        opts = dict(p.partition("=")[::2] for p in parts[1:])
        file = parts[0]
        if "=" in file:
            opts = dict(p.partition("=")[::2] for p in parts)
            file = opts.get("file", "")
        out.append((k, file, opts))
    return out


def volume_drives(keys):
    """Drives that are volumes: cdroms (drive_is_cdrom) are skipped."""
    return [(k, f, o) for k, f, o in drives(keys) if o.get("media") != "cdrom"]


# ---------------------------------------------------------------------------------------------
# the guest agent (QEMU guest agent answers, PVE's error texts)

def agent_call(vm, origin, cmd):
    """mon_cmd(vmid, "guest-<cmd>") against the simulated agent: the result, or Fail with
    QMPClient's message."""
    state = vm.agent_state()
    if state == "down":
        # no answer: QMPClient times out (PVE's timeouts per command: QMPClient::cmd)
        err = f"VM {vm.vmid} qga command 'guest-{cmd}' failed - got timeout"
        vm.log_agent(origin, cmd, f"error: {err}")
        raise Fail(err)
    if cmd == "ping":
        res = {}
    elif cmd == "fsfreeze-status":
        res = "frozen" if state == "frozen" else "thawed"
    elif cmd == "fsfreeze-freeze":
        if state == "frozen":
            # qga/main.c: while frozen only ping, info, sync, fsfreeze-status/-thaw are allowed
            err = (f"VM {vm.vmid} qga command 'guest-{cmd}' failed - Command guest-{cmd} has been "
                   "disabled: the agent is in frozen state")
            vm.log_agent(origin, cmd, f"error: {err}")
            raise Fail(err)
        res = len(volume_drives(vm.load().keys))
        # qemu-ga: no filesystem frozen leaves the agent unfrozen
        if res:
            vm.set_agent_state("frozen")
    elif cmd == "fsfreeze-thaw":
        # FITHAW on a filesystem that is not frozen fails and is not counted
        res = len(volume_drives(vm.load().keys)) if state == "frozen" else 0
        vm.set_agent_state("thawed")
    else:
        raise Fail(f"qm guest cmd {cmd}: not simulated by pve/sim")
    vm.log_agent(origin, cmd, json.dumps(res))
    return res


def assert_agent_available(vm, conf):
    """Agent::assert_agent_available. `agent: 0` passes the first check; QEMU then has no
    agent socket, so the ping fails."""
    if "agent" not in conf.keys:
        raise Fail("No QEMU guest agent configured")
    if not vm.running():
        raise Fail(f"VM {vm.vmid} is not running")
    if not parse_agent(conf.keys["agent"]) or vm.agent_state() == "down":
        raise Fail("QEMU guest agent is not running")


def print_agent_result(res):
    """qm.pm $print_agent_result: a scalar as is, an empty hash as nothing, else JSON."""
    if isinstance(res, dict) and not res:
        return
    if isinstance(res, (dict, list)):
        print(json.dumps(res, indent=3, sort_keys=True))
    else:
        print(res)


def cmd_guest(args):
    if not args or args[0] != "cmd":
        raise Fail("qm guest: pve/sim simulates only 'qm guest cmd <vmid> <command>'")
    usage = "guest cmd <vmid> <command>"
    p, _ = parse_args(args[1:], ["vmid", "command"], usage)
    if p["command"] not in AGENT_CMDS:
        param_error([("command", f"value '{p['command']}' does not have a value in the "
                      f"enumeration '{', '.join(AGENT_CMDS)}'")], usage)
    node = Node()
    vm = Vm(node, p["vmid"])
    conf = vm.load()
    if p["command"] not in SIMULATED_AGENT_CMDS:
        raise Fail(f"qm guest cmd {p['command']}: not simulated by pve/sim")
    try:
        assert_agent_available(vm, conf)
    except Fail as e:  # logged too: a test sees every attempt, even one that never got through
        vm.log_agent("guest-cmd", p["command"], f"error: {e}")
        raise
    print_agent_result(agent_call(vm, "guest-cmd", p["command"]))


# ---------------------------------------------------------------------------------------------
# power

def cmd_status(args):
    p, o = parse_args(args, ["vmid"], "status <vmid> [OPTIONS]", booleans=["verbose"])
    vm = Vm(Node(), p["vmid"])
    conf = vm.load()
    status = "running" if vm.running() else "stopped"
    if not o.get("verbose"):
        print(f"status: {status}")
        return
    # a few of vmstatus's fields, sorted as print_recursive_hash does
    stat = {"name": conf.keys.get("name", f"VM {vm.vmid}"), "qmpstatus": status,
            "status": status, "vmid": vm.vmid}
    if conf.keys.get("agent") and parse_agent(conf.keys["agent"]):
        stat["agent"] = 1
    if conf.keys.get("lock"):
        stat["lock"] = conf.keys["lock"]
    for k in sorted(stat):
        print(f"{k}: {stat[k]}")


def cmd_start(args):
    p, _ = parse_args(args, ["vmid"], "start <vmid> [OPTIONS]", options=["timeout"],
                      booleans=["skiplock"])
    node = Node()
    vm = Vm(node, p["vmid"])
    with lock(node, vm.vmid):
        conf = vm.load()
        check_lock(conf)
        if vm.running():
            raise Fail(f"VM {vm.vmid} already running")
        vm.start()


def cmd_stop(args):
    p, o = parse_args(args, ["vmid"], "stop <vmid> [OPTIONS]", options=["timeout"],
                      booleans=["skiplock", "keepActive", "overrule-shutdown"])
    node = Node()
    vm = Vm(node, p["vmid"])
    with lock(node, vm.vmid):
        conf = vm.load()
        if not vm.running():
            return  # _do_vm_stop returns quietly
        if not o.get("skiplock"):
            check_lock(conf)
        vm.stop()


# ---------------------------------------------------------------------------------------------
# snapshots (AbstractConfig + QemuConfig + ZFSPoolPlugin)

def zfs_request(*args):
    """ZFSPoolPlugin::zfs_request: `zfs ARGS` through run_command with errmsg "zfs error":
    earlier stderr lines are printed (into the task log), the last one is the error."""
    p = subprocess.run(["zfs", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        lines = [x for x in p.stderr.decode(errors="replace").splitlines() if x.strip()]
        for x in lines[:-1]:
            print(x, flush=True)
        raise Fail("zfs error: " + (lines[-1] if lines else f"exit code {p.returncode}"))
    return p.stdout.decode()


def zvol(node, volid):
    """The dataset of a zfspool zvol, or None when the storage has no snapshot feature for it
    (volume_has_feature: dir storage raw images have none)."""
    r = resolve_volume(node, volid)
    return r[1] if r[0] == "zvol" else None


def snapshot_volumes(node, keys):
    out = []
    for k, volid, _ in volume_drives(keys):
        out.append((k, volid, zvol(node, volid)))
    return out


def freeze_applicable(vm, conf):
    """Agent::guest_fs_freeze_applicable, printing its skip messages."""
    if not should_fs_freeze(conf.keys.get("agent")):
        print("skipping guest filesystem freeze - disabled in VM options")
        return False
    if vm.agent_state() == "down":  # qga_check_running's guest-ping gets no answer
        print("skipping guest filesystem freeze - agent configured but not running?")
        return False
    if agent_call(vm, "snapshot", "fsfreeze-status") == "frozen":
        print("skipping guest filesystem freeze - already frozen")
        return False
    return True


def cmd_snapshot(args):
    p, o = parse_args(args, ["vmid", "snapname"], "snapshot <vmid> <snapname> [OPTIONS]",
                      options=["description"], booleans=["vmstate"])
    vmid, snapname = p["vmid"], p["snapname"]
    if snapname == "current":
        raise Fail("unable to use snapshot name 'current' (reserved name)")
    if snapname.lower() == "pending":
        raise Fail("unable to use snapshot name 'pending' (reserved name)")
    if o.get("vmstate"):
        raise Fail("qm snapshot --vmstate: not simulated by pve/sim (there is no QEMU)")
    node = Node()
    vm = Vm(node, vmid)
    vm.load()
    # __snapshot_prepare
    with lock(node, vmid):
        conf = vm.load()
        if conf.keys.get("template"):
            raise Fail("you can't take a snapshot if it's a template")
        check_lock(conf)
        if snapname in conf.snapshots:
            raise Fail(f"snapshot name '{snapname}' already used")
        vols = snapshot_volumes(node, conf.keys)  # zfs-fuse: fails here, config untouched
        if any(ds is None for _, _, ds in vols):
            raise Fail("snapshot feature is not available")
        for name, (_, keys) in conf.snapshots.items():
            if keys.get("parent") == snapname:
                print(f"deleting parent '{snapname}' reference from '{name}' to avoid bogus "
                      "snapshot cycle.")
                del keys["parent"]
        conf.keys["lock"] = "snapshot"
        keys = {k: v for k, v in conf.keys.items()
                if k not in SNAP_COPY_SKIP and not re.match(r"^unused\d+$", k)}
        keys["snapstate"] = "prepare"
        keys["snaptime"] = str(int(time.time()))
        desc = o["description"].split("\n") if o.get("description") else []
        conf.snapshots[snapname] = (desc, keys)
        vm.save(conf)

    # snapshot_create
    running = vm.running()
    freeze = running and freeze_applicable(vm, conf)
    err = None
    done = []
    try:
        if freeze:
            try:
                agent_call(vm, "snapshot", "fsfreeze-freeze")
            except Fail as e:  # __snapshot_freeze warns and goes on
                print(f"unable to freeze guest fs - {e}")
        for key, volid, ds in vols:
            print(f"snapshotting 'drive-{key}' ({volid})", flush=True)
            zfs_request("snapshot", f"{ds}@{snapname}")
            done.append(key)
    except Fail as e:
        err = e
    if freeze:
        try:
            agent_call(vm, "snapshot", "fsfreeze-thaw")
        except Fail as e:
            print(f"guest-fsfreeze-thaw problems - {e}")
    if err is not None:
        print("snapshot create failed: starting cleanup")
        try:
            delete_snapshot(vm, snapname, force=True, only=done, expected_lock="snapshot")
        except Fail as e:
            print(e)
        raise err

    # __snapshot_commit
    with lock(node, vmid):
        conf = vm.load()
        if conf.keys.get("lock") != "snapshot":
            raise Fail("missing snapshot lock")
        if snapname not in conf.snapshots:
            raise Fail(f"snapshot '{snapname}' does not exist")
        keys = conf.snapshots[snapname][1]
        if keys.get("snapstate") != "prepare":
            raise Fail("wrong snapshot state")
        del keys["snapstate"]
        del conf.keys["lock"]
        conf.keys["parent"] = snapname
        vm.save(conf)


def add_unused(keys, volid):
    """AbstractConfig::add_unused_volume: the lowest free unusedN, no duplicates."""
    free = None
    for i in range(255, -1, -1):
        v = keys.get(f"unused{i}")
        if v == volid:
            return
        if v is None:
            free = i
    if free is None:
        raise Fail("Too many unused volumes - please delete them first.")
    keys[f"unused{free}"] = volid


def delete_snapshot(vm, snapname, force, only=None, expected_lock="snapshot-delete"):
    """AbstractConfig::snapshot_delete (only: the drives snapshot_create got to)."""
    node, vmid = vm.node, vm.vmid
    with lock(node, vmid):
        conf = vm.load()
        if snapname not in conf.snapshots:
            raise Fail(f"snapshot '{snapname}' does not exist")
        if only is None:  # set_lock
            check_lock(conf)
            conf.keys["lock"] = "snapshot-delete"
        if conf.keys.get("lock") != expected_lock:
            raise Fail(f"encountered invalid lock, expected '{expected_lock}'")
        if conf.keys.get("template"):
            raise Fail("you can't delete a snapshot if vm is a template")
        conf.snapshots[snapname][1]["snapstate"] = "delete"
        vm.save(conf)
    unused = []
    for key, volid, _ in volume_drives(conf.snapshots[snapname][1]):
        if only is None or key in only:
            try:
                ds = zvol(node, volid)
                if ds is None:
                    raise Fail(f"{volid}: snapshot of this storage is not simulated")
                zfs_request("destroy", f"{ds}@{snapname}")
                unused.append(volid)
            except Fail as e:
                if not force:
                    raise
                print(e)
        if not force:
            with lock(node, vmid):
                c = vm.load()
                if c.keys.get("lock") != expected_lock:
                    raise Fail(f"encountered invalid lock, expected '{expected_lock}'")
                skeys = c.snapshots[snapname][1]
                skeys.pop(key, None)
                add_unused(skeys, volid)
                vm.save(c)
    with lock(node, vmid):
        conf = vm.load()
        if conf.keys.get("lock") != expected_lock:
            raise Fail(f"encountered invalid lock, expected '{expected_lock}'")
        parent = conf.snapshots[snapname][1].get("parent")
        for keys in [conf.keys] + [k for n, (_, k) in conf.snapshots.items() if n != snapname]:
            if keys.get("parent") == snapname:
                if parent:
                    keys["parent"] = parent
                else:
                    del keys["parent"]
        del conf.snapshots[snapname]
        del conf.keys["lock"]
        in_use = {v for _, v, _ in drives(conf.keys)}
        for volid in unused:
            if volid not in in_use:  # write_vm_config drops unusedN of volumes in use
                add_unused(conf.keys, volid)
        vm.save(conf)


def cmd_delsnapshot(args):
    p, o = parse_args(args, ["vmid", "snapname"], "delsnapshot <vmid> <snapname> [OPTIONS]",
                      booleans=["force"])
    delete_snapshot(Vm(Node(), p["vmid"]), p["snapname"], bool(o.get("force")))


def rollback_is_possible(volid, ds, snapname):
    """ZFSPoolPlugin::volume_rollback_is_possible: only newer *snapshots* block."""
    names = [line.rpartition("@")[2] for line in
             zfs_request("list", "-H", "-r", "-t", "snapshot", "-o", "name", "-s", "creation",
                         ds).splitlines() if line]
    if snapname not in names:
        raise Fail(f"can't rollback, snapshot '{snapname}' does not exist on '{volid}'")
    if names.index(snapname) != len(names) - 1:
        raise Fail(f"can't rollback, '{snapname}' is not most recent snapshot on '{volid}'")


def cmd_rollback(args):
    p, o = parse_args(args, ["vmid", "snapname"], "rollback <vmid> <snapname> [OPTIONS]",
                      booleans=["start"])
    vmid, snapname = p["vmid"], p["snapname"]
    node = Node()
    vm = Vm(node, vmid)
    # snapshot_rollback, prepare
    with lock(node, vmid):
        conf = vm.load()
        if conf.keys.get("template"):
            raise Fail("you can't rollback if vm is a template")
        if snapname not in conf.snapshots:
            raise Fail(f"snapshot '{snapname}' does not exist")
        skeys = conf.snapshots[snapname][1]
        vols = snapshot_volumes(node, skeys)
        for _, volid, ds in vols:
            if ds is None:
                raise Fail(f"{volid}: snapshot of this storage is not simulated")
            rollback_is_possible(volid, ds, snapname)
        if skeys.get("snapstate"):
            raise Fail(f"unable to rollback to incomplete snapshot (snapstate = "
                       f"{skeys['snapstate']})")
        check_lock(conf)
        # __snapshot_rollback_vm_stop: vm_stop with a 5 s timeout, no shutdown
        if vm.running():
            vm.stop()
        conf.keys["lock"] = "rollback"
        vm.save(conf)
    # a failure here (a newer bookmark) leaves the VM stopped and the config locked, as in PVE
    for _, _, ds in vols:
        zfs_request("rollback", f"{ds}@{snapname}")
    with lock(node, vmid):
        conf = vm.load()
        if conf.keys.get("lock") != "rollback":
            raise Fail("got wrong lock")
        del conf.keys["lock"]
        skeys = conf.snapshots[snapname][1]
        snap_vols = {v for _, v, _ in drives(skeys)}
        for _, volid, opts in drives(conf.keys):
            if opts.get("media") != "cdrom" and volid not in snap_vols:
                add_unused(conf.keys, volid)
        # __snapshot_apply_config: keep description and unusedN, copy the snapshot's keys
        keys = {k: v for k, v in conf.keys.items() if re.match(r"^unused\d+$", k)}
        keys.update({k: v for k, v in skeys.items()
                     if k not in SNAP_COPY_SKIP and not re.match(r"^unused\d+$", k)})
        keys["parent"] = snapname
        for k in ("runningmachine", "runningcpu", "running-nets-host-mtu"):
            keys.pop(k, None)
        if "vmgenid" in keys:  # __snapshot_rollback_hook: a new generation
            keys["vmgenid"] = str(uuid.uuid4())
        conf.keys = keys
        vm.save(conf)
    if o.get("start") and not vm.running():
        vm.start()


def main(args):
    cmds = {"status": cmd_status, "start": cmd_start, "stop": cmd_stop, "guest": cmd_guest,
            "snapshot": cmd_snapshot, "rollback": cmd_rollback, "delsnapshot": cmd_delsnapshot}
    if not args or args[0] not in cmds:
        raise Fail(f"usage: qm {{{'|'.join(cmds)}}} ... (pve/sim simulates only these)")
    cmds[args[0]](args[1:])


if __name__ == "__main__":
    run_main(main, prefix=False)
