"""Write a raw disk image for the simulated VM 200: recognizable data with zero regions.

usage: mkdisk.py PATH SIZE LABEL
The content is a pure function of SIZE and LABEL, so an existing image of the right size and
content is left alone (pve/sim up is idempotent) and tests can rebuild the expected bytes.
Regions are chosen to exercise a VMA writer/reader: full 64 KiB clusters, clusters with only some
4 KiB blocks set (partial masks), all-zero clusters, and a device tail that is not a multiple of
64 KiB.
"""
import hashlib
import os
import sys

MIB = 1 << 20


def regions(size, label):
    """(offset, bytes) pieces; everything else is zero."""
    tag = label.encode()
    out = []
    head = (b"PROXBORG-SIM DISK " + tag + b"\n").ljust(512, b".")
    out.append((0, head * 8))  # block 0 of cluster 0
    out.append((15 * 4096, b"\xa5" * 4096))  # block 15 of cluster 0: mask 0x8001
    if size >= 4 * MIB:
        rnd = b"".join(hashlib.sha256(tag + b"%d" % i).digest() for i in range(2 * MIB // 32))
        out.append((1 * MIB, rnd))  # 2 MiB of incompressible data
    if size >= 16 * MIB:
        out.append((10 * MIB + 8192, (b"row " + tag + b" ").ljust(64, b"-") * 64))  # one block
    if size >= 40 * MIB:
        rows = b"".join(b"db-row-%08d\n" % i for i in range(MIB // 16))
        out.append((32 * MIB, rows[:MIB]))
    tail = (b"END OF DISK " + tag + b"\n").ljust(4096, b"#")
    out.append((size - 4096, tail))  # the last 4 KiB block
    return out


def content_ok(path, size, parts):
    if not os.path.isfile(path) or os.path.getsize(path) != size:
        return False
    with open(path, "rb") as f:
        for off, data in parts:
            f.seek(off)
            if f.read(len(data)) != data:
                return False
    return True


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: mkdisk.py PATH SIZE LABEL")
    path, size, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    parts = regions(size, label)
    if content_ok(path, size, parts):
        return
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.truncate(size)
        for off, data in parts:
            f.seek(off)
            f.write(data)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
