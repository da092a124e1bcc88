"""Shared pieces of the simulated PVE executables (pct, qm, vzdump, qmrestore): the node layout
under $PROXBORG_SIM_DIR, the PVE config grammars of shared/PVE-FACTS.md §5, volume resolution,
and running real programs. Nothing here fakes zfs or tar: they are always the real programs.
"""
import json
import os
import re
import subprocess
import sys
import time

PROG = os.path.basename(sys.argv[0]).removesuffix(".py")

# PVE-FACTS §1.2: @COMMON_TAR_FLAGS of pve-storage's Plugin.pm
COMMON_TAR_FLAGS = [
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
]

DEFAULT_IDMAP = [("u", 0, 100000, 65536), ("g", 0, 100000, 65536)]


class Fail(Exception):
    """A one-line error for the user; main() prints it and exits 255 like a Perl die."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_main(fn, prefix=True):
    """prefix=False prints the error alone, as PVE's CLIHandler does for an API error."""
    try:
        fn(sys.argv[1:])
    except Fail as e:
        print(f"{PROG}: {e}" if prefix else str(e), file=sys.stderr)
        sys.exit(255)
    except KeyboardInterrupt:
        sys.exit(130)


class Node:
    """The simulated node: DIR, pool, node name and the /etc/pve root."""

    def __init__(self):
        d = os.environ.get("PROXBORG_SIM_DIR")
        if not d:
            raise Fail("PROXBORG_SIM_DIR is not set (run via $DIR/bin or eval \"$(pve/sim up)\")")
        self.dir = d
        conf = {}
        try:
            with open(os.path.join(d, "sim.conf")) as f:
                for line in f:
                    k, _, v = line.strip().partition("=")
                    conf[k] = v
        except OSError as e:
            raise Fail(f"cannot read {d}/sim.conf: {e.strerror}")
        self.pool = conf.get("POOL", "")
        self.node = conf.get("NODE", "pve")
        self.pve = os.path.join(d, "etc", "pve")
        self.nodedir = os.path.join(self.pve, "nodes", self.node)

    def conf_path(self, vmid, kind):
        sub = "lxc" if kind == "lxc" else "qemu-server"
        return os.path.join(self.nodedir, sub, f"{vmid}.conf")

    def guest_type(self, vmid):
        if os.path.exists(self.conf_path(vmid, "lxc")):
            return "lxc"
        if os.path.exists(self.conf_path(vmid, "qemu")):
            return "qemu"
        return None

    def state(self, vmid):
        try:
            with open(os.path.join(self.dir, "state", str(vmid))) as f:
                return f.read().strip() or "STOPPED"
        except FileNotFoundError:
            return "STOPPED"

    def set_state(self, vmid, state):
        write_file(os.path.join(self.dir, "state", str(vmid)), state + "\n")

    def vmlist(self):
        p = os.path.join(self.pve, ".vmlist")
        try:
            with open(p) as f:
                return json.load(f)
        except FileNotFoundError:
            return {"version": 1}
        except (OSError, ValueError) as e:
            raise Fail(f"{p}: {e}")

    def update_vmlist(self, vmid, kind):
        vl = self.vmlist()
        version = int(vl.get("version", 0)) + 1
        ids = vl.get("ids", {})
        if kind is None:
            ids.pop(str(vmid), None)
        else:
            ids[str(vmid)] = {"node": self.node, "type": kind, "version": version}
        vl = {"version": version}
        if ids:
            vl["ids"] = ids
        write_file(os.path.join(self.pve, ".vmlist"), json.dumps(vl, indent=1) + "\n")

    def storage(self):
        return parse_storage_cfg(os.path.join(self.pve, "storage.cfg"))


def write_file(path, text, mode=0o644):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def parse_storage_cfg(path):
    """storage.cfg (PVE-FACTS §5.4) → {storeid: {"type": t, key: value}}."""
    out, cur = {}, None
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        raise Fail(f"cannot read {path}: {e.strerror}")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            cur = None
            continue
        if line.lstrip().startswith("#"):
            continue
        if line[0] in " \t":
            if cur is None:
                raise Fail(f"{path}:{n}: property outside a section")
            k, _, v = line.strip().partition(" ")
            cur[k] = v.strip() or "1"
            continue
        m = re.match(r"^(\S+):\s*(\S+)\s*$", line)
        if not m:
            raise Fail(f"{path}:{n}: bad section header {line!r}")
        cur = {"type": m.group(1).lower()}
        out[m.group(2)] = cur
    return out


class Config:
    """A pct/qemu config (PVE-FACTS §5.2/5.3): description, main keys, raw lxc.* lines, sections."""

    def __init__(self):
        self.description = []  # decoded lines
        self.keys = {}
        self.lxc = []  # [(key, value)] in file order
        self.sections = []  # [(name, [raw lines])]

    @classmethod
    def parse(cls, text, path="<config>"):
        c = cls()
        section = None
        for n, line in enumerate(text.splitlines(), 1):
            m = re.match(r"^\[([^\]]+)\]\s*$", line)
            if m:
                section = (m.group(1), [])
                c.sections.append(section)
                continue
            if section is not None:
                section[1].append(line)
                continue
            if not line.strip():
                continue
            if line.startswith("#"):
                c.description.append(decode_text(line[1:]))
                continue
            m = re.match(r"^(lxc\.[a-z0-9_\-.]+)(?::|\s*=)\s*(.*?)\s*$", line)
            if m:
                c.lxc.append((m.group(1), m.group(2)))
                continue
            m = re.match(r"^([a-z][a-z_]*\d*):\s*(.+?)\s*$", line)
            if not m:
                raise Fail(f"{path}:{n}: unable to parse config line {line!r}")
            if m.group(1) == "description":
                c.description.extend(m.group(2).split("\n"))
            else:
                c.keys[m.group(1)] = m.group(2)
        return c

    def write_pct(self):
        """write_pct_config: description as #-lines, sorted keys, raw lxc lines last."""
        out = [f"#{encode_text(d)}\n" for d in self.description]
        out += [f"{k}: {self.keys[k]}\n" for k in sorted(self.keys)]
        out += [f"{k}: {v}\n" for k, v in self.lxc]
        return "".join(out)


def decode_text(s):
    return re.sub(r"%([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def encode_text(s):
    return "".join(
        c if (32 <= ord(c) < 127 and c not in ":%") else "".join(f"%{b:02X}" for b in c.encode())
        for c in s
    )


def parse_propstring(value, default_key):
    """`vol,key=v,...` → dict with the first bare item under default_key."""
    out = {}
    for i, part in enumerate(value.split(",")):
        if "=" in part:
            k, _, v = part.partition("=")
            out[k] = v
        elif i == 0:
            out[default_key] = part
        else:
            raise Fail(f"bad property string {value!r}")
    return out


def parse_size(s):
    m = re.match(r"^(\d+(?:\.\d+)?)([KMGT])?(?:iB)?$", s)
    if not m:
        raise Fail(f"unable to parse size {s!r}")
    mult = {None: 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * mult)


def format_size(n):
    """PVE's format_size: the largest unit that divides the byte count exactly."""
    if n == 0:
        return "0T"
    for unit, mult in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def id_maps(conf):
    """PVE-FACTS §6: lxc.idmap entries, else the default map when unprivileged, else none."""
    maps = []
    for k, v in conf.lxc:
        if k == "lxc.idmap":
            m = re.match(r"^([ug])\s+(\d+)\s+(\d+)\s+(\d+)\s*$", v)
            if not m:
                raise Fail(f"invalid lxc.idmap entry {v!r}")
            maps.append((m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))))
    if not maps and conf.keys.get("unprivileged") == "1":
        maps = list(DEFAULT_IDMAP)
    return maps


def userns_command(maps):
    if not maps:
        return []
    cmd = ["lxc-usernsexec"]
    for t, ct, host, count in maps:
        cmd += ["-m", f"{t}:{ct}:{host}:{count}"]
    return cmd + ["--"]


def root_ids(maps):
    uid = gid = 0
    for t, ct, host, count in maps:
        if ct == 0:
            if t == "u":
                uid = host
            else:
                gid = host
    return uid, gid


def real_openzfs():
    """Whether `zfs` is kernel OpenZFS (the tests/openzfs VM) rather than zfs-fuse: only
    OpenZFS has a kernel module, and zfs-fuse's package conflicts with zfsutils-linux."""
    return os.path.isdir("/sys/module/zfs")


def resolve_volume(node, volid):
    """A volid → ("dataset", name, mountpoint) for a zfspool subvol, ("zvol", name, device) for
    a zfspool zvol (real OpenZFS only), ("file", path) for a dir storage image or iso, or raises
    Fail (PVE-FACTS §5.5)."""
    if volid.startswith("/"):
        return ("file", volid)
    storeid, sep, volname = volid.partition(":")
    if not sep:
        raise Fail(f"unable to parse volume ID {volid!r}")
    st = node.storage().get(storeid)
    if st is None:
        raise Fail(f"storage '{storeid}' does not exist")
    if st["type"] == "zfspool":
        m = re.match(r"^(?:(?:base|basevol)-\d+-\S+/)?((?:base|basevol|vm|subvol)-(\d+)-\S+)$", volname)
        if not m:
            raise Fail(f"unable to parse zfs volume name '{volname}'")
        name = m.group(1)
        ds = f"{st['pool']}/{name}"
        if not name.startswith(("subvol-", "basevol-")):
            if not real_openzfs():
                raise Fail(f"{volid}: zvols are not available on zfs-fuse (pve/sim)")
            # ZFSPoolPlugin::path: /dev/zvol/<pool>/<name> (a udev link; may lag behind creation)
            return ("zvol", ds, f"/dev/zvol/{ds}")
        return ("dataset", ds, zfs_mountpoint(ds))
    if st["type"] == "dir":
        m = re.match(r"^iso/(.+)$", volname)
        if m:
            return ("file", os.path.join(st["path"], "template", "iso", m.group(1)))
        m = re.match(r"^(\d+)/([^/]+)$", volname)
        if m:
            return ("file", os.path.join(st["path"], "images", m.group(1), m.group(2)))
        raise Fail(f"unable to parse directory volume name '{volname}'")
    raise Fail(f"{volid}: storage type '{st['type']}' is not simulated")


def run(cmd, **kw):
    """Run a real program; a failure is a one-line Fail naming the command."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.run(cmd, **kw)
    if p.returncode != 0:
        err = (p.stderr or b"").decode(errors="replace").strip().splitlines()
        raise Fail(f"command '{' '.join(cmd)}' failed: exit code {p.returncode}"
                   + (f": {err[-1]}" if err else ""))
    return p


def zfs_mountpoint(ds):
    return run(["zfs", "get", "-H", "-o", "value", "mountpoint", ds]).stdout.decode().strip()


def zfs_exists(name):
    return subprocess.run(["zfs", "list", "-H", "-o", "name", name],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def zfs_destroy(*args):
    """`zfs destroy ARGS`, retried: right after a reader closes its files zfs-fuse reports
    "dataset is busy" for a moment (the kernel releases FUSE handles asynchronously)."""
    for _ in range(50):
        p = subprocess.run(["zfs", "destroy", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode == 0:
            return
        if b"busy" not in p.stderr:
            break
        time.sleep(0.1)
    raise Fail(f"command 'zfs destroy {' '.join(args)}' failed: {p.stderr.decode(errors='replace').strip()}")


def umount(path):
    """umount, retried while a just-finished reader keeps the mount busy."""
    for _ in range(50):
        p = subprocess.run(["umount", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode == 0:
            return
        time.sleep(0.1)
    raise Fail(f"umount {path} failed: {p.stderr.decode(errors='replace').strip()}")
