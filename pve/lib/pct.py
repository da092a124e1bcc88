"""Simulated `pct` of the pve/sim node: `restore`, `list`, `status`, `config`, `destroy`.

`pct restore` follows PVE-FACTS §1: it allocates new zfspool subvols (real `zfs create`), mounts
every volume under a root directory, runs the exact `restore_tar_archive_command` argv (inside
`lxc-usernsexec` with the default map when unprivileged), then merges ./etc/vzdump/pct.conf and
pct.fw the way `restore_configuration_from_etc_vzdump` does and writes lxc/<vmid>.conf.

One deviation, forced by zfs-fuse and taken only when a volume lives on it: zfs-fuse refuses
chown from a non-root caller even inside a user namespace (EPERM where kernel ZFS allows it), so
for an unprivileged restore onto zfs-fuse the exact tar command extracts into a staging directory
on the host filesystem and host root then copies that tree, owners unchanged (already shifted by
the namespace), into the mounted volumes. zfs-fuse stores no xattrs or ACLs anyway. On real
OpenZFS (the tests/openzfs VM) the tar command extracts straight into the volumes, as PVE does.
"""
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pvesim import (COMMON_TAR_FLAGS, Config, Fail, Node, format_size, id_maps, log,  # noqa: E402
                    parse_propstring, parse_size, resolve_volume, root_ids, run, run_main,
                    umount, userns_command, write_file, zfs_destroy, zfs_exists)

NEVER_FROM_BACKUP = {"digest", "rootfs", "snapshots", "unprivileged", "parent", "template"}
BOOL_TRUE = {"1", "true", "yes", "on"}


def parse_opts(args, positional):
    pos, opts = [], {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and len(a) > 2:
            k, eq, v = a[2:].partition("=")
            if not eq:
                if i + 1 < len(args) and not args[i + 1].startswith("--"):
                    v = args[i + 1]
                    i += 1
                else:
                    v = "1"
            opts[k] = v
        else:
            pos.append(a)
        i += 1
    if len(pos) != positional:
        raise Fail(f"expected {positional} positional argument(s), got {len(pos)}: {' '.join(pos)}")
    return pos, opts


def vmid_arg(s):
    if not re.match(r"^[1-9]\d{2,8}$", s):
        raise Fail(f"invalid vmid '{s}'")
    return int(s)


def tar_compression_option(path):
    """PVE-FACTS §1.3: by file name only."""
    m = re.search(r"\.tar(\.[^.]+)?$", path)
    if not m:
        raise Fail(f"file '{path}' does not look like a template archive")
    ext = m.group(1)
    table = {None: [], ".gz": ["-z"], ".bz2": ["-j"], ".xz": ["-J"], ".lzo": ["--lzop"], ".zst": ["--zstd"]}
    if ext not in table:
        raise Fail(f"unrecognized compression format: {ext}")
    return table[ext]


def config_from_archive(path):
    """recover_config_from_tar: the first ./etc/vzdump/pct.conf member, read with tar -xpOf."""
    listing = subprocess.Popen(["tar", "tf", path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    member = None
    for line in listing.stdout:
        name = line.decode(errors="replace").rstrip("\n")
        if re.search(r"(\./etc/vzdump/(pct|vps)\.conf)$", name):
            member = name
            break
    listing.kill()
    listing.wait()
    if member is None:
        raise Fail("archive contains no configuration file")
    p = run(["tar", "-xpOf", path, member, "--occurrence"])
    return Config.parse(p.stdout.decode(errors="replace"), f"{path}:{member}")


def free_disk_name(pool, vmid, used):
    n = 0
    while f"subvol-{vmid}-disk-{n}" in used or zfs_exists(f"{pool}/subvol-{vmid}-disk-{n}"):
        n += 1
    used.add(f"subvol-{vmid}-disk-{n}")
    return f"subvol-{vmid}-disk-{n}"


def allocate(node, vmid, spec, key, used, root_uid, root_gid):
    """`STORAGE:GiB[,opts]` → a new subvol (PVE-FACTS §1.6); returns (config value, dataset)."""
    props = parse_propstring(spec, "volume")
    vol = props.pop("volume")
    m = re.match(r"^([^:\s]+):(\d+(\.\d+)?)$", vol)
    if not m:
        raise Fail(f"{key}: only new volumes (STORAGE:SIZE_IN_GiB) are simulated, got '{vol}'")
    storeid, gib = m.group(1), float(m.group(2))
    st = node.storage().get(storeid)
    if st is None:
        raise Fail(f"storage '{storeid}' does not exist")
    if st["type"] != "zfspool":
        raise Fail(f"storage '{storeid}' is of type {st['type']}; pve/sim allocates on zfspool only")
    kib = int(gib * 1024) * 1024
    name = free_disk_name(st["pool"], vmid, used)
    ds = f"{st['pool']}/{name}"
    quota = f"{kib}k" if kib else "none"
    # PVE adds -o acltype=posixacl -o xattr=sa; zfs-fuse knows neither property.
    run(["zfs", "create", "-o", f"refquota={quota}", ds])
    mp = run(["zfs", "get", "-H", "-o", "value", "mountpoint", ds]).stdout.decode().strip()
    os.chown(mp, root_uid, root_gid)
    value = ",".join([f"{storeid}:{name}"] + [f"{k}={v}" for k, v in props.items()]
                     + [f"size={format_size(kib * 1024)}"])
    return value, ds, mp, props.get("mp")


def on_fuse(path):
    """Whether PATH lies on a FUSE filesystem (zfs-fuse mounts as fuse.zfs)."""
    best, fstype = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            mnt = fields[1].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, fields[2]
    return fstype.startswith("fuse")


def merge_config(conf, backup, vmid, cli_keys):
    """sanitize_and_merge_config (PVE-FACTS §1.4)."""
    for k, v in backup.keys.items():
        if k in NEVER_FROM_BACKUP or re.match(r"^(mp|unused)\d+$", k):
            continue
        if k in cli_keys:
            continue
        conf.keys[k] = v
    if not conf.description:
        conf.description = backup.description
    if backup.lxc:
        conf.lxc = backup.lxc + [x for x in conf.lxc if x not in backup.lxc]
    conf.keys.setdefault("hostname", f"CT{vmid}")
    conf.keys.setdefault("memory", "512")
    conf.keys.setdefault("swap", "512")


def cmd_restore(args):
    (vmid_s, archive), opts = parse_opts(args, 2)
    vmid = vmid_arg(vmid_s)
    node = Node()
    force = opts.pop("force", "0") in BOOL_TRUE
    if node.guest_type(vmid) and not force:
        raise Fail(f"unable to restore CT {vmid} - CT {vmid} already exists on node '{node.node}'")
    if node.guest_type(vmid) and force:
        destroy(node, vmid)
    ignore_errors = opts.pop("ignore-unpack-errors", "0") in BOOL_TRUE
    storage = opts.pop("storage", "local")
    pool = opts.pop("pool", None)
    if pool is not None:
        pool_members(node, pool)  # fail before allocating anything

    backup_conf = None
    if archive == "-":
        if "rootfs" not in opts:
            raise Fail("restore from pipe requires rootfs parameter")
        comp = []
    else:
        if not os.path.isfile(archive):
            raise Fail(f"can't find file '{archive}'")
        comp = tar_compression_option(archive)
        backup_conf = config_from_archive(archive)

    if "unprivileged" in opts:
        unpriv = opts.pop("unprivileged") in BOOL_TRUE
    else:
        unpriv = bool(backup_conf and backup_conf.keys.get("unprivileged") == "1")

    conf = Config()
    if unpriv:
        conf.keys["unprivileged"] = "1"
    if backup_conf is not None:
        conf.lxc = [x for x in backup_conf.lxc if x[0] == "lxc.idmap"]
    maps = id_maps(conf)
    root_uid, root_gid = root_ids(maps)

    # volumes: rootfs first, then mpN by index; storage-only mode reads sizes from the archive
    vol_specs = {}
    if "rootfs" in opts:
        vol_specs["rootfs"] = opts.pop("rootfs")
        for k in [k for k in opts if re.match(r"^mp\d+$", k)]:
            vol_specs[k] = opts.pop(k)
    elif backup_conf is not None:
        for k in ["rootfs"] + sorted((k for k in backup_conf.keys if re.match(r"^mp\d+$", k)),
                                     key=lambda k: int(k[2:])):
            if k not in backup_conf.keys:
                continue
            p = parse_propstring(backup_conf.keys[k], "volume")
            if p["volume"].startswith("/"):
                continue
            if "size" not in p:
                raise Fail("unable to detect disk size - please specify rootfs (size)")
            gib = parse_size(p["size"]) / (1 << 30)
            rest = [f"{a}={b}" for a, b in p.items() if a not in ("volume", "size")]
            vol_specs[k] = ",".join([f"{storage}:{gib:g}"] + rest)
    else:
        vol_specs["rootfs"] = f"{storage}:4"

    cli_keys = set()
    for k, v in opts.items():
        if k in ("rootfs",) or re.match(r"^mp\d+$", k):
            continue
        conf.keys[k] = v
        cli_keys.add(k)

    used, made = set(), []
    rootdir = os.path.join(node.dir, "run", "lxc", str(vmid), "rootfs")
    mounts = []
    staging = None
    try:
        mounted = []  # (path in CT, host mountpoint)
        for k in sorted(vol_specs, key=lambda k: -1 if k == "rootfs" else int(k[2:])):
            value, ds, mp, ctpath = allocate(node, vmid, vol_specs[k], k, used, root_uid, root_gid)
            made.append(ds)
            conf.keys[k] = value
            mounted.append(("/" if k == "rootfs" else ctpath, mp))
        os.makedirs(rootdir, exist_ok=True)
        for ctpath, hostmp in mounted:
            target = rootdir
            # like PVE's walk_tree_nofollow: missing mount point dirs belong to the CT's root
            for part in [p for p in ctpath.split("/") if p]:
                target = os.path.join(target, part)
                if not os.path.isdir(target):
                    os.mkdir(target, 0o755)
                    os.chown(target, root_uid, root_gid)
            os.makedirs(target, exist_ok=True)
            run(["mount", "--bind", hostmp, target])
            mounts.append(target)

        target = rootdir
        if maps and any(on_fuse(hostmp) for _, hostmp in mounted):
            staging = os.path.join(node.dir, "tmp", f"restore-{vmid}-{os.getpid()}")
            os.makedirs(staging)
            os.chmod(staging, 0o755)
            os.chown(staging, root_uid, root_gid)
            target = staging
        cmd = userns_command(maps) + ["tar", "xpf", "-"] + comp + ["--totals"] + COMMON_TAR_FLAGS + [
            "-C", target, "--skip-old-files", "--anchored", "--exclude", "./dev/*"]
        log(f"extracting archive '{archive}'")
        stdin = open(archive, "rb") if archive != "-" else sys.stdin.buffer
        p = subprocess.run(cmd, stdin=stdin, stdout=sys.stderr.fileno(), stderr=subprocess.PIPE)
        err = p.stderr.decode(errors="replace")
        sys.stderr.write(err)
        if p.returncode != 0 and not ignore_errors:
            last = [x for x in err.splitlines() if x.strip()]
            raise Fail(f"unable to restore CT {vmid} - command '{' '.join(cmd)}' failed: exit code "
                       f"{p.returncode}" + (f" ({last[-1]})" if last else ""))
        if staging:
            copy = subprocess.Popen(["tar", "-C", staging, "-cpf", "-", "--numeric-owner", "."],
                                    stdout=subprocess.PIPE)
            paste = subprocess.run(["tar", "-C", rootdir, "-xpf", "-", "--numeric-owner",
                                    "--skip-old-files"], stdin=copy.stdout, stderr=subprocess.PIPE)
            copy.stdout.close()
            if copy.wait() != 0 or paste.returncode != 0:
                raise Fail(f"copying {staging} into the volumes failed: "
                           f"{paste.stderr.decode(errors='replace').strip()}")

        # restore_configuration_from_etc_vzdump
        pct_conf = os.path.join(rootdir, "etc", "vzdump", "pct.conf")
        pct_fw = os.path.join(rootdir, "etc", "vzdump", "pct.fw")
        if os.path.isfile(pct_conf) and not os.path.islink(pct_conf):
            with open(pct_conf) as f:
                merge_config(conf, Config.parse(f.read(), pct_conf), vmid, cli_keys)
            os.unlink(pct_conf)
        elif os.path.exists(os.path.join(rootdir, "etc", "vzdump", "vps.conf")):
            raise Fail("OpenVZ archives are not simulated")
        else:
            log("WARN: Backup archive does not contain any configuration")
            merge_config(conf, Config(), vmid, cli_keys)
        if os.path.isfile(pct_fw) and not os.path.islink(pct_fw):
            if os.path.getsize(pct_fw) > 0:
                shutil.copyfile(pct_fw, os.path.join(node.pve, "firewall", f"{vmid}.fw"))
            os.unlink(pct_fw)
        os.makedirs(os.path.dirname(node.conf_path(vmid, "lxc")), exist_ok=True)
        write_file(node.conf_path(vmid, "lxc"), conf.write_pct())
        node.update_vmlist(vmid, "lxc")
        if pool is not None:
            add_to_pool(node, pool, vmid)
        node.set_state(vmid, "STOPPED")
        made = []
    finally:
        for m in reversed(mounts):
            try:
                umount(m)
            except Fail as e:
                log(f"WARN: {e}")
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(os.path.join(node.dir, "run", "lxc", str(vmid)), ignore_errors=True)
        for ds in made:  # only on failure: undo the allocation like PVE's create_vm does
            try:
                zfs_destroy("-r", ds)
            except Fail as e:
                log(f"WARN: {e}")


def pool_members(node, pool):
    path = os.path.join(node.pve, "user.cfg")
    for line in open(path).read().splitlines():
        f = line.split(":")
        if len(f) >= 4 and f[0] == "pool" and f[1] == pool:
            return [v for v in f[3].split(",") if v]
    raise Fail(f"pool '{pool}' does not exist")


def add_to_pool(node, pool, vmid):
    """user.cfg `pool:<id>:<comment>:<vmids>:<storeids>:` gets the new vmid (PVE-FACTS §5.6);
    pool=None removes the vmid from every pool."""
    path = os.path.join(node.pve, "user.cfg")
    out = []
    for line in open(path).read().splitlines():
        f = line.split(":")
        if len(f) >= 4 and f[0] == "pool":
            members = [v for v in f[3].split(",") if v and v != str(vmid)]
            if f[1] == pool:
                members.append(str(vmid))
            f[3] = ",".join(members)
            line = ":".join(f)
        out.append(line)
    write_file(path, "\n".join(out) + "\n")


def load(node, vmid):
    kind = node.guest_type(vmid)
    if kind != "lxc":
        raise Fail(f"Configuration file 'nodes/{node.node}/lxc/{vmid}.conf' does not exist")
    path = node.conf_path(vmid, "lxc")
    with open(path) as f:
        return Config.parse(f.read(), path)


def destroy(node, vmid):
    conf = load(node, vmid)
    for k, v in conf.keys.items():
        if k == "rootfs" or re.match(r"^(mp|unused)\d+$", k):
            vol = parse_propstring(v, "volume")["volume"]
            if vol.startswith("/"):
                continue
            r = resolve_volume(node, vol) if ":" in vol else None
            if r and r[0] == "dataset":
                zfs_destroy("-r", r[1])
    os.unlink(node.conf_path(vmid, "lxc"))
    fw = os.path.join(node.pve, "firewall", f"{vmid}.fw")
    if os.path.exists(fw):
        os.unlink(fw)
    node.update_vmlist(vmid, None)
    add_to_pool(node, None, vmid)
    try:
        os.unlink(os.path.join(node.dir, "state", str(vmid)))
    except FileNotFoundError:
        pass


def cmd_destroy(args):
    (vmid_s,), _ = parse_opts(args, 1)
    node = Node()
    vmid = vmid_arg(vmid_s)
    if node.state(vmid) != "STOPPED":
        raise Fail(f"CT {vmid} is running - destroy failed")
    destroy(node, vmid)


def cmd_list(args):
    parse_opts(args, 0)
    node = Node()
    ids = sorted(int(v) for v, e in node.vmlist().get("ids", {}).items() if e.get("type") == "lxc")
    print(f"{'VMID':<10} {'Status':<10} {'Lock':<12} {'Name':<20}")
    for vmid in ids:
        conf = load(node, vmid)
        print(f"{vmid:<10} {node.state(vmid).lower():<10} {conf.keys.get('lock', ''):<12} "
              f"{conf.keys.get('hostname', ''):<20}")


def cmd_status(args):
    (vmid_s,), _ = parse_opts(args, 1)
    node = Node()
    vmid = vmid_arg(vmid_s)
    load(node, vmid)
    state = node.state(vmid)
    print(f"status: {'stopped' if state == 'STOPPED' else 'running'}")


def cmd_config(args):
    (vmid_s,), _ = parse_opts(args, 1)
    node = Node()
    conf = load(node, int(vmid_arg(vmid_s)))
    sys.stdout.write(conf.write_pct())


def main(args):
    cmds = {"restore": cmd_restore, "list": cmd_list, "status": cmd_status, "config": cmd_config,
            "destroy": cmd_destroy}
    if not args or args[0] not in cmds:
        raise Fail(f"usage: pct {{{'|'.join(cmds)}}} ... (pve/sim simulates only these)")
    cmds[args[0]](args[1:])


if __name__ == "__main__":
    run_main(main)
