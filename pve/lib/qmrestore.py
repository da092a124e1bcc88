"""Simulated `qmrestore <archive|-> <vmid> [--storage S] [--force 1]` of the pve/sim node
(PVE-FACTS §4.3): reads a VMA stream (stdin must be uncompressed; a file may be .vma, .vma.gz or
.vma.zst), allocates one raw image per device on a dir storage (`<path>/images/<vmid>/
vm-<vmid>-disk-N.raw`; zvols do not exist on zfs-fuse), writes the blocks, and rewrites the
embedded qemu-server.conf as `restore_update_config_line` does. A `<storeid>:backup/...` volume
of a `proxborg` (backup-provider) storage is handed to `vzdump-provider qmrestore`, which calls
the plugin and `qemu-img convert` and comes back through `--provider-finish` for the config.
"""
import json
import os
import re
import subprocess
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pvesim import Config, Fail, Node, log, parse_propstring, resolve_volume, run_main, write_file  # noqa: E402
from vma import Reader  # noqa: E402

DISK_RE = re.compile(r"^((?:ide|scsi|virtio|sata|efidisk|tpmstate)\d+):\s*(\S+)\s*$")


def parse_args(args):
    pos, opts, i = [], {}, 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            k, eq, v = a[2:].partition("=")
            if not eq:
                if i + 1 >= len(args):
                    raise Fail(f"option --{k} needs a value")
                v, i = args[i + 1], i + 1
            opts[k] = v
        else:
            pos.append(a)
        i += 1
    if len(pos) != 2:
        raise Fail("usage: qmrestore <archive|-> <vmid> [--storage S] [--force 1]")
    if not re.match(r"^[1-9]\d{2,8}$", pos[1]):
        raise Fail(f"invalid vmid '{pos[1]}'")
    return pos[0], int(pos[1]), opts


def open_archive(archive):
    if archive == "-":
        return sys.stdin.buffer, None
    if not os.path.isfile(archive):
        raise Fail(f"can't find file '{archive}'")
    m = re.search(r"\.vma(\.(gz|zst|lzo))?$", archive)
    if not m:
        raise Fail(f"unable to detect archive format of '{archive}'")
    if not m.group(2):
        return open(archive, "rb"), None
    cmd = {"gz": ["zcat"], "zst": ["zstd", "-q", "-d", "-c"], "lzo": ["lzop", "-d", "-c"]}[m.group(2)]
    p = subprocess.Popen(cmd + [archive], stdout=subprocess.PIPE)
    return p.stdout, p


def destroy_vm(node, vmid):
    path = node.conf_path(vmid, "qemu")
    conf = Config.parse(open(path).read(), path)
    for k, v in conf.keys.items():
        if DISK_RE.match(f"{k}: {v}") or re.match(r"^unused\d+$", k):
            d = parse_propstring(v, "file")
            if d.get("media") == "cdrom" or ":" not in d["file"]:
                continue
            kind, *rest = resolve_volume(node, d["file"])
            if kind == "file" and f"/images/{vmid}/" in rest[0] and os.path.exists(rest[0]):
                os.unlink(rest[0])
    os.unlink(path)


def rewrite_config(text, volids):
    """restore_update_config_line: drop backup hints, lock, unused, parent; point mapped disks
    at their new volumes (without format); comment out backup=0 disks; new vmgenid."""
    out = []
    for line in text.splitlines(keepends=True):
        if re.match(r"^#(qmdump|vzdump)#", line) or re.match(r"^(lock|unused\d+|parent):", line):
            continue
        m = DISK_RE.match(line)
        if m:
            virtdev, value = m.groups()
            d = parse_propstring(value, "file")
            if d.get("backup") == "0":
                out.append("#" + line)
                continue
            if virtdev in volids:
                d.pop("format", None)
                d["file"] = volids[virtdev]
                opts = [f"{k}={v}" for k, v in d.items() if k != "file"]
                out.append(f"{virtdev}: {','.join([d['file']] + opts)}\n")
                continue
        m = re.match(r"^vmgenid: (.*)$", line)
        if m and m.group(1).strip() != "0":
            out.append(f"vmgenid: {uuid.uuid4()}\n")
            continue
        out.append(line)
    return "".join(out)


def finish(node, vmid, conf_text, volids, fw):
    """The restored VM's config (rewritten), its firewall file, .vmlist and state."""
    write_file(node.conf_path(vmid, "qemu"), rewrite_config(conf_text, volids))
    if fw is not None:
        with open(os.path.join(node.pve, "firewall", f"{vmid}.fw"), "wb") as out:
            out.write(fw)
    node.update_vmlist(vmid, "qemu")
    node.set_state(vmid, "STOPPED")


def main(args):
    if args[:1] == ["--provider-finish"]:
        # vzdump-provider's qmrestore from a backup-provider storage: JSON {conf, volids, fw}
        req = json.load(sys.stdin)
        fw = req.get("fw")
        finish(Node(), int(args[1]), req["conf"], req["volids"], fw.encode() if fw else None)
        return
    archive, vmid, opts = parse_args(args)
    node = Node()
    if node.guest_type(vmid):
        if opts.get("force") not in ("1", "true", "yes"):
            raise Fail(f"unable to restore VM {vmid} - VM {vmid} already exists on node '{node.node}'")
        if node.guest_type(vmid) != "qemu":
            raise Fail(f"unable to restore VM {vmid} - CT {vmid} exists")
        destroy_vm(node, vmid)
    m = re.match(r"^([A-Za-z][\w.-]*):backup/", archive)
    if m and (node.storage().get(m.group(1)) or {}).get("type") == "proxborg":
        # a backup-provider storage: PVE's restore_external_archive, replayed in Perl
        os.execv(os.path.join(node.dir, "bin", "vzdump-provider"),
                 ["vzdump-provider", "qmrestore"] + args)
    inp, proc = open_archive(archive)
    reader = Reader(inp)
    configs, devices = reader.read_header()
    conf_text = configs.get("qemu-server.conf")
    if conf_text is None:
        raise Fail("archive contains no qemu-server.conf")
    conf_text = conf_text.decode(errors="replace")
    maps = {}  # devname -> (virtdev, storeid, format)
    for line in conf_text.splitlines():
        m = re.match(r"^#qmdump#map:(\S+):(\S+):(\S*):(\S*):$", line)
        if m:
            maps[m.group(2)] = (m.group(1), opts.get("storage") or m.group(3) or "local", m.group(4) or "raw")
    st_all = node.storage()
    files, volids, made = {}, {}, []
    try:
        for dev_id, (name, size) in sorted(devices.items()):
            if name not in maps:
                raise Fail(f"found no device mapping information for device '{name}'")
            virtdev, storeid, fmt = maps.pop(name)
            st = st_all.get(storeid)
            if st is None or st["type"] != "dir":
                raise Fail(f"storage '{storeid}' is not a simulated dir storage (zvols do not exist on zfs-fuse)")
            if fmt != "raw":
                raise Fail(f"{virtdev}: format {fmt} is not simulated (raw only)")
            imgdir = os.path.join(st["path"], "images", str(vmid))
            os.makedirs(imgdir, exist_ok=True)
            n = 0
            while os.path.exists(os.path.join(imgdir, f"vm-{vmid}-disk-{n}.raw")):
                n += 1
            path = os.path.join(imgdir, f"vm-{vmid}-disk-{n}.raw")
            f = open(path, "wb")
            made.append(path)
            f.truncate((size + 1023) // 1024 * 1024)  # PVE allocates ceil(size/1024) KiB
            files[dev_id] = (f, size)
            volids[virtdev] = f"{storeid}:{vmid}/vm-{vmid}-disk-{n}.raw"
            log(f"new volume ID is '{volids[virtdev]}'")
        if maps:
            raise Fail(f"archive does not contain data for drive '{next(iter(maps.values()))[0]}'")
        for dev_id, off, block in reader.extents():
            f, size = files[dev_id]
            if off < size:
                f.seek(off)
                f.write(block[:size - off])
        reader.finish()
        if proc is not None and proc.wait() != 0:
            raise Fail("decompressor failed")
        for f, _size in files.values():
            f.close()
        finish(node, vmid, conf_text, volids, configs.get("qemu-server.fw"))
        made = []
    finally:
        for f, _size in files.values():
            f.close()
        for path in made:  # only on failure
            os.unlink(path)
        if made:
            try:
                os.rmdir(os.path.dirname(made[0]))
            except OSError:
                pass


if __name__ == "__main__":
    run_main(main)
