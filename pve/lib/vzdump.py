"""Simulated `vzdump` of the pve/sim node (PVE-FACTS §2, §3, §4).

    vzdump <vmid> [--stdout] [--dumpdir D | --storage S] [--compress 0|gzip|zstd]
           [--mode snapshot|stop|suspend] [--script HOOK] [--exclude-path P]... [--quiet]
           [--stdexcludes 0|1] [--tmpdir T]

QEMU guests: a VMA stream (§4.2) of the VM's raw disk images (cdroms and backup=0 disks skipped)
with the `qemu-server.conf` (+ `qemu-server.fw`) blobs. LXC guests: the tar of §2.4, run under
`lxc-usernsexec` for unprivileged CTs, from read-only clones of `@vzdump` snapshots (snapshot mode;
zfs-fuse cannot mount a snapshot directly) or bind mounts (stop mode). Hook scripts get the
phases, arguments and wiped environment of §3. Only one guest per call.
"""
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vma import write_vma  # noqa: E402
from pvesim import (COMMON_TAR_FLAGS, Config, Fail, Node, id_maps, parse_propstring,  # noqa: E402
                    resolve_volume, run, run_main, userns_command, umount, write_file, zfs_destroy,
                    zfs_exists)


DRIVE_ORDER = ([f"ide{i}" for i in range(4)] + [f"sata{i}" for i in range(6)]
               + [f"scsi{i}" for i in range(31)] + [f"virtio{i}" for i in range(16)]
               + ["efidisk0", "tpmstate0"])


class Opts:
    def __init__(self, args):
        self.vmids, self.excludes = [], []
        self.o = {}
        bools = {"stdout", "quiet", "stdexcludes", "remove", "all"}
        i = 0
        while i < len(args):
            a = args[i]
            if a.startswith("--"):
                k, eq, v = a[2:].partition("=")
                if not eq:
                    nxt = args[i + 1] if i + 1 < len(args) else None
                    if k in bools and (nxt is None or nxt not in ("0", "1")):
                        v = "1"
                    elif nxt is None:
                        raise Fail(f"option --{k} needs a value")
                    else:
                        v, i = nxt, i + 1
                if k == "exclude-path":
                    self.excludes.append(v)
                else:
                    self.o[k] = v
            elif re.match(r"^[1-9]\d{2,8}$", a):
                self.vmids.append(int(a))
            else:
                raise Fail(f"invalid argument '{a}'")
            i += 1

    def get(self, k, default=None):
        return self.o.get(k, default)

    def flag(self, k, default="0"):
        return self.o.get(k, default) in ("1", "true", "yes", "on")


class Job:
    def __init__(self, opts, node):
        self.opts, self.node = opts, node
        self.quiet = opts.flag("quiet")
        self.loglines = []
        self.script = opts.get("script")
        if self.script and not (os.path.isfile(self.script) and os.access(self.script, os.X_OK)):
            raise Fail(f"The hook script '{self.script}' does not exist or is not executable")
        self.env = {}  # STOREID/DUMPDIR/VMTYPE/HOSTNAME/TARGET/LOGFILE as they become known

    def log(self, level, msg):
        line = f"{level}: {msg}"
        self.loglines.append(line)
        if not self.quiet or level in ("ERROR", "WARN"):
            print(line, file=sys.stderr, flush=True)

    def hook(self, phase, mode=None, vmid=None):
        if not self.script:
            return
        argv = [self.script, phase] + ([mode, str(vmid)] if vmid is not None else [])
        env = {k: v for k, v in self.env.items() if v}
        env.update({"LC_ALL": "C", "LVM_SUPPRESS_FD_WARNINGS": "1"})
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        for line in p.stdout.decode(errors="replace").splitlines():
            self.log("INFO", line)
        if p.returncode != 0:
            raise Fail(f"command '{' '.join(argv)}' failed: exit code {p.returncode}")


# ---------------------------------------------------------------------------------------------
def qemu_backup(job, vmid, out):
    node = job.node
    path = node.conf_path(vmid, "qemu")
    text = open(path).read()
    conf = Config.parse(text, path)
    devices, maps = [], []
    for key in DRIVE_ORDER:
        if key not in conf.keys:
            continue
        d = parse_propstring(conf.keys[key], "file")
        if d.get("media") == "cdrom" or d.get("file") == "none":
            job.log("INFO", f"exclude cdrom {key}")
            continue
        if d.get("backup") == "0":
            job.log("INFO", f"exclude disk '{key}' '{d['file']}' (backup=no)")
            continue
        if key == "efidisk0" and conf.keys.get("bios") != "ovmf":
            continue
        kind, *rest = resolve_volume(node, d["file"])
        if kind != "file":
            raise Fail(f"{key}: only raw image files are simulated")
        img = rest[0]
        fmt = d.get("format") or ("raw" if img.endswith(".raw") or "." not in os.path.basename(img)
                                  else os.path.splitext(img)[1][1:])
        if fmt != "raw":
            raise Fail(f"{key}: format {fmt} is not simulated (raw only)")
        try:
            size = os.path.getsize(img)
        except OSError as e:
            raise Fail(f"{key}: {img}: {e.strerror}")
        qmdev = "drive-tpmstate0-backup" if key == "tpmstate0" else f"drive-{key}"
        devices.append((qmdev, size, img))
        storeid = d["file"].split(":", 1)[0] if ":" in d["file"] else ""
        maps.append(f"#qmdump#map:{key}:{qmdev}:{storeid}:{fmt}:\n")
        job.log("INFO", f"include disk '{key}' '{d['file']}' {size // (1 << 20)}M")
    lines = []
    for line in text.splitlines(keepends=True):
        if re.match(r"^\[.*\]\s*$", line):
            break
        if re.match(r"^#(vzdump|qmdump)#", line) or re.match(r"^(unused\d+|lock|parent):", line):
            continue
        lines.append(line if line.endswith("\n") else line + "\n")
    configs = [("qemu-server.conf", ("".join(lines) + "".join(maps)).encode())]
    fw = os.path.join(node.pve, "firewall", f"{vmid}.fw")
    if os.path.isfile(fw):
        configs.append(("qemu-server.fw", open(fw, "rb").read()))
    write_vma(out, configs, devices)


# ---------------------------------------------------------------------------------------------
# LXC (PVE-FACTS §2)

def lxc_volumes(job, conf):
    vols = []  # (key, ctpath, dataset)
    keys = ["rootfs"] + sorted((k for k in conf.keys if re.match(r"^mp\d+$", k)), key=lambda k: int(k[2:]))
    for key in keys:
        if key not in conf.keys:
            continue
        p = parse_propstring(conf.keys[key], "volume")
        vol = p["volume"]
        ctpath = "/" if key == "rootfs" else p.get("mp", "")
        if vol.startswith("/"):
            job.log("INFO", f"excluding {'device' if vol.startswith('/dev/') else 'bind'} mount point "
                            f"{key} ('{ctpath}') from backup (not a volume)")
            continue
        if key != "rootfs" and p.get("backup") != "1":
            job.log("INFO", f"excluding volume mount point {key} ('{ctpath}') from backup (disabled)")
            continue
        kind, *rest = resolve_volume(job.node, vol)
        if kind != "dataset":
            raise Fail(f"{key}: only zfspool subvols are simulated")
        vols.append((key, ctpath, rest[0]))
        job.log("INFO", f"including mount point {key} ('{ctpath}') in backup")
    return vols


def lxc_backup(job, vmid, mode, out, compress, tmpdir):
    node = job.node
    path = node.conf_path(vmid, "lxc")
    conf = Config.parse(open(path).read(), path)
    vols = lxc_volumes(job, conf)
    maps = id_maps(conf)
    snapdir = os.path.join(node.dir, "mnt", "vzsnap0")
    if os.path.isdir(snapdir) and (os.path.ismount(snapdir) or os.listdir(snapdir)):
        raise Fail(f"unable to backup CT {vmid}: {snapdir} is not empty")
    os.makedirs(snapdir, exist_ok=True)
    undo = []
    try:
        sources = []  # (ctpath, host directory holding that volume's tree)
        if mode == "snapshot":
            for _k, _p, ds in vols:
                if zfs_exists(f"{ds}@vzdump"):
                    zfs_destroy(f"{ds}@vzdump")
            # PVE takes one storage snapshot per volume (not one atomic multi-snapshot)
            for _k, _p, ds in vols:
                run(["zfs", "snapshot", f"{ds}@vzdump"])
                undo.append(("zfs-destroy", f"{ds}@vzdump"))
            # zfs-fuse cannot mount a snapshot; a read-only clone shows the same tree
            for i, (_k, ctpath, ds) in enumerate(vols):
                clone = f"{ds.rsplit('/', 1)[0]}/vzsnap-{vmid}-{i}"
                mnt = os.path.join(node.dir, "run", f"vzsnap-{vmid}-{i}")
                if zfs_exists(clone):
                    zfs_destroy("-f", clone)
                run(["zfs", "clone", "-o", "readonly=on", "-o", f"mountpoint={mnt}", f"{ds}@vzdump", clone])
                undo.append(("zfs-destroy", "-f", clone))
                sources.append((ctpath, mnt))
        else:
            for _k, ctpath, ds in vols:
                sources.append((ctpath, run(["zfs", "get", "-H", "-o", "value", "mountpoint", ds])
                                .stdout.decode().strip()))
        # zfs-fuse checks directory search permission against the caller's raw uid, so tar in a
        # user namespace cannot walk it (kernel ZFS allows it). Each volume is therefore copied
        # by host root onto its own tmpfs under /mnt/vzsnap0: the composed tree PVE mounts,
        # one filesystem per volume, so --one-file-system behaves as on PVE.
        for ctpath, src in sources:
            target = os.path.join(snapdir, ctpath.lstrip("/"))
            os.makedirs(target, exist_ok=True)
            run(["mount", "-t", "tmpfs", "-o", "mode=755", "vzsnap", target])
            undo.append(("umount", target))
            copy_tree(src, target)
        # assemble: pct.conf without lock/snapshots/parent/pending, and pct.fw (empty if none)
        etc = os.path.join(tmpdir, "etc", "vzdump")
        os.makedirs(etc)
        for d in (tmpdir, os.path.join(tmpdir, "etc"), etc):
            os.chmod(d, 0o755)
        for k in ("lock", "parent"):
            conf.keys.pop(k, None)
        conf.sections = []
        write_file(os.path.join(etc, "pct.conf"), conf.write_pct())
        fw = os.path.join(node.pve, "firewall", f"{vmid}.fw")
        if os.path.isfile(fw):
            shutil.copyfile(fw, os.path.join(etc, "pct.fw"))
        else:
            write_file(os.path.join(etc, "pct.fw"), "")
        os.chmod(os.path.join(etc, "pct.fw"), 0o644)

        excludes = list(job.opts.excludes)
        if job.opts.flag("stdexcludes", "1"):
            excludes += ["/tmp/?*", "/var/tmp/?*", "/var/run/?*.pid"]
        cmd = userns_command(maps) + ["tar", "cpf", "-", "--totals"] + COMMON_TAR_FLAGS + [
            "--one-file-system", "--warning=no-file-ignored",
            f"--directory={tmpdir}", "./etc/vzdump/pct.conf", "./etc/vzdump/pct.fw",
            f"--directory={snapdir}", "--no-anchored"]
        if maps:
            cmd.append("--exclude=lost+found")
        cmd += [f"--exclude={e}" for e in excludes if not e.startswith("/")]
        cmd.append("--anchored")
        cmd += [f"--exclude=.{e}" for e in excludes if e.startswith("/")]
        cmd += ["." + ctpath if ctpath != "/" else "./" for _k, ctpath, _ds in vols]
        job.log("INFO", f"starting tar: {' '.join(cmd)}")
        pipe_to(job, cmd, out, compress)
    finally:
        for c in reversed(undo):
            try:
                if c[0] == "zfs-destroy":
                    zfs_destroy(*c[1:])
                else:
                    umount(c[1])
            except Fail as e:
                job.log("WARN", f"cleanup: {e}")
        shutil.rmtree(tmpdir, ignore_errors=True)
        for i in range(len(vols)):  # zfs-fuse leaves a clone's mountpoint directory behind
            try:
                os.rmdir(os.path.join(node.dir, "run", f"vzsnap-{vmid}-{i}"))
            except OSError:
                pass
        if not os.path.ismount(snapdir):
            shutil.rmtree(snapdir, ignore_errors=True)


def copy_tree(src, dst):
    """Host root copies one volume's tree, owners and modes unchanged."""
    a = subprocess.Popen(["tar", "-C", src, "-cpf", "-", "--numeric-owner", "--one-file-system", "."],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    b = subprocess.run(["tar", "-C", dst, "-xpf", "-", "--numeric-owner"], stdin=a.stdout,
                       stderr=subprocess.PIPE)
    a.stdout.close()
    err = a.stderr.read().decode(errors="replace")
    if a.wait() != 0 or b.returncode != 0:
        raise Fail(f"copying {src} to {dst} failed: {(err + b.stderr.decode(errors='replace')).strip()}")


def compressor(compress):
    if compress in ("0", None):
        return None, ""
    if compress == "gzip":
        return ["gzip", "--rsyncable"], ".gz"
    if compress == "zstd":
        return ["zstd", "-q", "--threads=1"], ".zst"
    raise Fail(f"compression '{compress}' is not simulated (use 0, gzip or zstd)")


def pipe_to(job, cmd, out, compress):
    comp, _ext = compressor(compress)
    if comp is None:
        p = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE)
        rc, err = p.returncode, p.stderr
    else:
        p1 = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p2 = subprocess.Popen(comp, stdin=p1.stdout, stdout=out)
        p1.stdout.close()
        err = p1.stderr.read()
        rc = p1.wait() or p2.wait()
    text = err.decode(errors="replace")
    for line in text.splitlines():
        job.loglines.append(f"INFO: {line}")
        if rc != 0 or not job.quiet:
            print(line, file=sys.stderr)
    if rc != 0:
        raise Fail(f"command '{' '.join(cmd)}' failed: exit code {rc}")


# ---------------------------------------------------------------------------------------------

def main(args):
    opts = Opts(args)
    node = Node()
    if len(opts.vmids) != 1:
        raise Fail("pve/sim's vzdump backs up exactly one guest per call")
    vmid = opts.vmids[0]
    kind = node.guest_type(vmid)
    if kind is None:
        raise Fail(f"Backup of VM {vmid} failed - unable to find VM {vmid}")
    stdout = opts.flag("stdout")
    if stdout and opts.get("storage"):
        raise Fail("cannot use options 'storage' and 'stdout' at the same time")
    storage = opts.get("storage")
    dumpdir = opts.get("dumpdir")
    if storage and not stdout and (node.storage().get(storage) or {}).get("type") == "proxborg":
        # a backup-provider storage: PVE's provider path, replayed in Perl with the plugin
        os.execv(os.path.join(node.dir, "bin", "vzdump-provider"),
                 ["vzdump-provider", "backup"] + args)
    job = Job(opts, node)
    # one vzdump per node at a time, as PVE's /var/run/vzdump.lock (it waits, it does not fail)
    os.makedirs(os.path.join(node.dir, "run"), exist_ok=True)
    lock = open(os.path.join(node.dir, "run", "vzdump.lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    if dumpdir is None:
        storage = storage or "local"
        st = node.storage().get(storage)
        if st is None or st["type"] != "dir":
            raise Fail(f"storage '{storage}' is not a simulated dir storage; use --dumpdir")
        dumpdir = os.path.join(st["path"], "dump")
    if storage:
        job.env["STOREID"] = storage
    if opts.get("dumpdir"):
        job.env["DUMPDIR"] = dumpdir
    os.makedirs(dumpdir, exist_ok=True)

    job.hook("job-init")
    job.env["DUMPDIR"] = dumpdir
    job.hook("job-start")
    start = time.time()
    stamp = time.strftime("%Y_%m_%d-%H_%M_%S", time.localtime(start))
    basename = f"vzdump-{kind}-{vmid}-{stamp}"
    ext = ".vma" if kind == "qemu" else ".tar"
    _comp, cext = compressor(opts.get("compress", "0"))
    target = "-" if stdout else os.path.join(dumpdir, basename + ext + cext)
    logfile = os.path.join(dumpdir, basename + ".log")
    path = node.conf_path(vmid, kind)
    conf = Config.parse(open(path).read(), path)
    hostname = conf.keys.get("hostname" if kind == "lxc" else "name") or \
        (f"CT{vmid}" if kind == "lxc" else f"VM{vmid}")
    running = node.state(vmid) in ("RUNNING", "FROZEN")
    mode = opts.get("mode", "snapshot")
    if mode not in ("snapshot", "stop", "suspend"):
        raise Fail(f"invalid mode '{mode}'")
    if not running:
        mode = "stop"
    elif mode == "suspend":
        job.log("INFO", "pve/sim: suspend mode is simulated as snapshot")
        mode = "snapshot"
    job.env.update({"VMTYPE": kind, "HOSTNAME": hostname, "TARGET": target, "LOGFILE": logfile})
    job.log("INFO", f"Starting Backup of VM {vmid} ({kind})")
    job.log("INFO", f"Backup started at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(start))}")
    job.log("INFO", f"status = {'running' if running else 'stopped'}")
    job.log("INFO", f"backup mode: {mode}")
    tmpdir = os.path.join(opts.get("tmpdir") or os.path.join(node.dir, "tmp"), f"vzdumptmp{os.getpid()}_{vmid}")
    failed = None
    try:
        job.hook("backup-start", mode, vmid)
        if mode == "snapshot" or running:
            job.hook("pre-stop", mode, vmid)
        if mode == "snapshot":
            job.hook("pre-restart", mode, vmid)
            job.hook("post-restart", mode, vmid)
        if stdout:
            out = os.fdopen(os.dup(1), "wb")
            # vzdump points its own STDOUT at STDERR so logs never mix with the archive
            os.dup2(2, 1)
        else:
            out = open(target + ".dat", "wb")
        with out:
            if kind == "qemu":
                comp, _ = compressor(opts.get("compress", "0"))
                if comp is None:
                    qemu_backup(job, vmid, out)
                else:
                    p = subprocess.Popen(comp, stdin=subprocess.PIPE, stdout=out)
                    qemu_backup(job, vmid, p.stdin)
                    p.stdin.close()
                    if p.wait() != 0:
                        raise Fail(f"compressor {comp[0]} failed")
            else:
                lxc_backup(job, vmid, mode, out, opts.get("compress", "0"), tmpdir)
        if not stdout:
            os.replace(target + ".dat", target)
            job.log("INFO", f"archive file size: {os.path.getsize(target)}")
        job.hook("backup-end", mode, vmid)
        if mode == "stop" and running:
            job.hook("pre-restart", mode, vmid)
            job.hook("post-restart", mode, vmid)
        job.log("INFO", f"Finished Backup of VM {vmid} ({time.time() - start:.0f}s)")
    except (Fail, OSError) as e:
        failed = e
        job.log("ERROR", f"Backup of VM {vmid} failed - {e}")
        if not stdout:
            try:
                os.unlink(target + ".dat")
            except FileNotFoundError:
                pass
        try:
            job.hook("backup-abort", mode, vmid)
        except Fail as e2:
            job.log("WARN", str(e2))
    write_file(logfile, "".join(line + "\n" for line in job.loglines))
    try:
        job.hook("log-end", mode, vmid)
    except Fail as e:
        job.log("WARN", str(e))
    for k in ("VMTYPE", "HOSTNAME", "TARGET", "LOGFILE"):  # job phases see no guest variables
        job.env.pop(k, None)
    job.hook("job-end")
    if failed:
        raise Fail(f"job failed with err - {failed}")


if __name__ == "__main__":
    run_main(main)
