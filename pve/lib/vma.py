"""The VMA backup format of Proxmox (PVE-FACTS §4.2): a writer for the simulated vzdump and a
streaming reader for the simulated qmrestore. All integers are big-endian except blob lengths.
Both sides check what QEMU's vma tool checks; the reader accepts clusters in any order.
"""
import hashlib
import struct
import time
import uuid

from pvesim import Fail

CLUSTER = 65536
BLOCK = 4096
EXTENT_CLUSTERS = 58  # the QEMU writer flushes at 58 buffered clusters
MAX_BLOCKINFO = 59  # what the reader accepts
HEADER_FIXED = 12288
EXTENT_HEADER = 512

class Blobs:
    """The blob buffer: offset 0 unused, each blob a little-endian u16 length plus data."""

    def __init__(self):
        self.buf = bytearray(b"\0")

    def add(self, data):
        if len(data) > 65535:
            raise Fail(f"blob too large ({len(data)} bytes, VMA allows 65535)")
        off = len(self.buf)
        self.buf += struct.pack("<H", len(data)) + data
        return off


def vma_header(uid, ctime, configs, devices):
    blobs = Blobs()
    cfg_names, cfg_data = [0] * 256, [0] * 256
    for i, (name, data) in enumerate(configs):
        cfg_names[i] = blobs.add(name.encode() + b"\0")
        cfg_data[i] = blobs.add(data)
    dev_info = bytearray(8192)
    for dev_id, (name, size, _path) in enumerate(devices, 1):
        struct.pack_into(">IIQ", dev_info, dev_id * 32, blobs.add(name.encode() + b"\0"), 0, size)
    blob_size = len(blobs.buf)
    header_size = HEADER_FIXED + (blob_size + 511) // 512 * 512
    h = bytearray(header_size)
    h[0:4] = b"VMA\0"
    struct.pack_into(">I16sq", h, 4, 1, uid, ctime)
    struct.pack_into(">III", h, 48, HEADER_FIXED, blob_size, header_size)
    struct.pack_into(">256I", h, 2044, *cfg_names)
    struct.pack_into(">256I", h, 3068, *cfg_data)
    h[4096:12288] = dev_info
    h[HEADER_FIXED:HEADER_FIXED + blob_size] = blobs.buf
    h[32:48] = hashlib.md5(bytes(h)).digest()
    return bytes(h)


def vma_clusters(devices):
    """(dev_id, cluster_num, mask, data) for every cluster of every device, sequentially."""
    for dev_id, (_name, size, path) in enumerate(devices, 1):
        with open(path, "rb") as f:
            for cn in range((size + CLUSTER - 1) // CLUSTER):
                raw = f.read(CLUSTER)
                limit = size - cn * CLUSTER  # blocks past the device end count as zero
                mask, data = 0, []
                for b in range(16):
                    blk = raw[b * BLOCK:(b + 1) * BLOCK]
                    if b * BLOCK >= limit:
                        continue
                    blk = blk[:max(0, limit - b * BLOCK)].ljust(BLOCK, b"\0")
                    if blk.count(0) != BLOCK:
                        mask |= 1 << b
                        data.append(blk)
                yield dev_id, cn, mask, b"".join(data)


def vma_extent(uid, entries):
    h = bytearray(512)
    h[0:4] = b"VMAE"
    blocks = sum(len(d) // BLOCK for *_x, d in entries)
    struct.pack_into(">HH16s", h, 4, 0, blocks, uid)
    for i, (dev_id, cn, mask, _d) in enumerate(entries):
        struct.pack_into(">Q", h, 40 + 8 * i, (mask << 48) | (dev_id << 32) | cn)
    h[24:40] = hashlib.md5(bytes(h)).digest()
    return bytes(h) + b"".join(d for *_x, d in entries)


def write_vma(out, configs, devices):
    uid = uuid.uuid4().bytes
    out.write(vma_header(uid, int(time.time()), configs, devices))
    batch = []
    for entry in vma_clusters(devices):
        batch.append(entry)
        if len(batch) == EXTENT_CLUSTERS:
            out.write(vma_extent(uid, batch))
            batch = []
    if batch:
        out.write(vma_extent(uid, batch))
    out.flush()


def _read_exact(inp, n, what):
    buf = bytearray()
    while len(buf) < n:
        chunk = inp.read(n - len(buf))
        if not chunk:
            if not buf and what == "extent header":
                return None
            raise Fail(f"vma: truncated {what} ({len(buf)} of {n} bytes)")
        buf += chunk
    return bytes(buf)


def _blob(buf, off, string):
    if off == 0 or off + 2 > len(buf):
        raise Fail(f"vma: blob offset {off} out of range")
    n = buf[off] | buf[off + 1] << 8
    data = buf[off + 2:off + 2 + n]
    if len(data) != n:
        raise Fail(f"vma: blob at {off} overruns the blob buffer")
    if string:
        if not data.endswith(b"\0"):
            raise Fail(f"vma: string blob at {off} lacks its NUL")
        return data[:-1].decode(errors="replace")
    return data


class Reader:
    """read_header() → (configs {name: bytes}, devices {dev_id: (name, size)}); then
    extents() yields (dev_id, offset, 4 KiB block) for every stored block, and the caller
    learns about zero clusters through the `seen` set checked by finish()."""

    def __init__(self, inp):
        self.inp = inp
        self.seen = set()

    def read_header(self):
        fixed = _read_exact(self.inp, HEADER_FIXED, "header")
        if fixed[0:4] != b"VMA\0":
            raise Fail("vma: bad header magic")
        version, = struct.unpack_from(">I", fixed, 4)
        if version != 1:
            raise Fail(f"vma: unsupported version {version}")
        self.uuid = fixed[8:24]
        self.ctime, = struct.unpack_from(">q", fixed, 24)
        blob_off, blob_size, header_size = struct.unpack_from(">III", fixed, 48)
        if header_size < HEADER_FIXED or blob_off < HEADER_FIXED or blob_off + blob_size > header_size:
            raise Fail("vma: inconsistent header sizes")
        header = bytearray(fixed + _read_exact(self.inp, header_size - HEADER_FIXED, "header"))
        want = bytes(header[32:48])
        header[32:48] = bytes(16)
        if hashlib.md5(bytes(header)).digest() != want:
            raise Fail("vma: header md5 mismatch")
        blobs = bytes(header[blob_off:blob_off + blob_size])
        names = struct.unpack_from(">256I", header, 2044)
        datas = struct.unpack_from(">256I", header, 3068)
        self.configs = {}
        for n, d in zip(names, datas):
            if n or d:
                self.configs[_blob(blobs, n, True)] = _blob(blobs, d, False)
        self.devices = {}
        for dev_id in range(1, 255):
            name_ptr, _res, size = struct.unpack_from(">IIQ", header, 4096 + 32 * dev_id)
            if name_ptr:
                self.devices[dev_id] = (_blob(blobs, name_ptr, True), size)
        return self.configs, self.devices

    def extents(self):
        while True:
            h = _read_exact(self.inp, EXTENT_HEADER, "extent header")
            if h is None:
                return
            if h[0:4] != b"VMAE" or h[4:6] != b"\0\0":
                raise Fail("vma: bad extent header")
            if h[8:24] != self.uuid:
                raise Fail("vma: extent uuid differs from the header")
            hz = bytearray(h)
            hz[24:40] = bytes(16)
            if hashlib.md5(bytes(hz)).digest() != h[24:40]:
                raise Fail("vma: extent md5 mismatch")
            block_count, = struct.unpack_from(">H", h, 6)
            data = _read_exact(self.inp, block_count * BLOCK, "extent data")
            pos = 0
            for i in range(MAX_BLOCKINFO):
                bi, = struct.unpack_from(">Q", h, 40 + 8 * i)
                dev_id = (bi >> 32) & 0xFF
                if dev_id == 0:
                    continue
                if dev_id not in self.devices:
                    raise Fail(f"vma: extent names unknown device {dev_id}")
                mask, cluster = bi >> 48, bi & 0xFFFFFFFF
                if (dev_id, cluster) in self.seen:
                    raise Fail(f"vma: found duplicated cluster {cluster} of device {dev_id}")
                self.seen.add((dev_id, cluster))
                for b in range(16):
                    if mask & (1 << b):
                        if pos + BLOCK > len(data):
                            raise Fail("vma: extent masks name more blocks than block_count")
                        yield dev_id, cluster * CLUSTER + b * BLOCK, data[pos:pos + BLOCK]
                        pos += BLOCK
            if pos != len(data):
                raise Fail("vma: extent block_count disagrees with its masks")

    def finish(self):
        for dev_id, (name, size) in self.devices.items():
            for c in range((size + CLUSTER - 1) // CLUSTER):
                if (dev_id, c) not in self.seen:
                    raise Fail(f"vma: detected missing cluster {c} of {name}")
