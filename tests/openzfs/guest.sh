#!/bin/sh
# guest.sh — proxborg's end-to-end checks on REAL OpenZFS; runs inside the qemu VM started by
# tests/openzfs/run (busybox sh as PID 1's child, the 9p share at /mnt/host, proxborg in
# /usr/local/bin). Each check prints `PASS name` or `FAIL name: reason`; the last line is
# `SUMMARY pass=N fail=M expected=E`, which the host parses: it fails unless every one of the
# E checks this script defines reported (a check that neither passed nor failed is a bug). Debian's busybox ash runs its own applets
# before PATH, so GNU tools are called by absolute path (/usr/bin/tar, /usr/bin/stat, ...).
H=/mnt/host
PASS=0 FAIL=0
# How many PASS/FAIL lines a complete run prints; change it with the checks.
EXPECTED_CHECKS=65
pass() { echo "PASS $1"; PASS=$((PASS + 1)); }
fail() { echo "FAIL $1: $2"; FAIL=$((FAIL + 1)); }
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "--- [$(up)s] $*"; }
finish() { echo "SUMMARY pass=$PASS fail=$FAIL expected=$EXPECTED_CHECKS"; echo "SUMMARY pass=$PASS fail=$FAIL expected=$EXPECTED_CHECKS" > $H/summary; exit 0; }

# A release binary: keys get the full Argon2id costs (the fast-KDF switch is for test builds).
export PROXBORG_REPO=/rpool/repo/r PROXBORG_PASSPHRASE=openzfs-tier

# ---------------------------------------------------------------- pool and datasets as PVE makes them
say "pool"
if ! zpool create -f -o ashift=12 -O compression=lz4 -O acltype=posixacl -O xattr=sa rpool /dev/vda1; then
  fail pool "zpool create on /dev/vda1 failed"; finish
fi
zfs create rpool/data && zfs create rpool/repo || { fail pool "zfs create rpool/data failed"; finish; }
# compression=off on the compared datasets: with lz4, zeros written out would also show a tiny
# `du`, so only with it off does a small du prove that holes were punched rather than written.
mk() { zfs create -o acltype=posixacl -o xattr=sa -o compression=off "rpool/data/$1"; }
mk subvol-100-disk-0 && mk subvol-101-disk-0 && mk subvol-102-disk-0 && mk subvol-104-disk-0 && mk subvol-105-disk-0 || { fail pool "PVE-style zfs create failed"; finish; }
pass pool

# ---------------------------------------------------------------- the source tree
S=/rpool/data/subvol-100-disk-0
say "populate $S"
populate() {
  S=$1 B=$2
  set -e
  i() { echo $(($1 + B)); }
  mkdir -p $S/etc/acl-default $S/usr/bin $S/var/empty
  printf 'root:x:0:0::/root:/bin/sh\n' > $S/etc/passwd
  echo "acl file" > $S/etc/aclfile
  /usr/bin/setfacl -m u:$(i 1000):rwx,g:$(i 1001):r-x,m::rwx $S/etc/aclfile
  /usr/bin/setfacl -m u:$(i 1002):r-x $S/etc/acl-default
  /usr/bin/setfacl -d -m u:$(i 1000):rwx,g:$(i 1001):rx $S/etc/acl-default
  echo inherits > $S/etc/acl-default/child      # gets an access ACL from the default ACL
  echo xattrs > $S/etc/xfile
  /usr/bin/setfattr -n user.proxborg -v "hello world" $S/etc/xfile
  /usr/bin/setfattr -n user.bin -v 0x00ff10 $S/etc/xfile
  cp /bin/busybox $S/usr/bin/ping
  /usr/sbin/setcap cap_net_raw+ep $S/usr/bin/ping
  echo suid > $S/usr/bin/suid; chmod 4755 $S/usr/bin/suid
  echo sgid > $S/usr/bin/sgid; chmod 2711 $S/usr/bin/sgid
  mkdir $S/tmp; chmod 1777 $S/tmp
  # sparse: 64 MiB with data at 0, 32 MiB and the last byte
  echo head > $S/sparse
  echo middle | dd of=$S/sparse bs=1M seek=32 conv=notrunc 2>/dev/null
  /usr/bin/truncate -s 64M $S/sparse 2>/dev/null || truncate -s 64M $S/sparse
  printf z | dd of=$S/sparse bs=1 seek=67108863 conv=notrunc 2>/dev/null
  ln $S/etc/passwd $S/etc/passwd.hardlink
  ln -s ../etc/passwd $S/usr/passwd.link
  mkfifo $S/var/fifo
  chown -R $(i 0):$(i 0) $S; chown $(i 1000):$(i 1001) $S/etc/aclfile $S/var/empty; chown $(i 33):$(i 33) $S/etc/xfile
  chown -h $(i 1000):$(i 1000) $S/usr/passwd.link
  chmod 4755 $S/usr/bin/suid; chmod 2711 $S/usr/bin/sgid   # chown clears set-id bits
  # and the capability; an unprivileged CT's is set inside its userns (a v3 capability, rootid 100000)
  if [ "$B" = 0 ]; then /usr/sbin/setcap cap_net_raw+ep $S/usr/bin/ping
  else /usr/bin/lxc-usernsexec -m u:0:100000:65536 -m g:0:100000:65536 -- /usr/sbin/setcap cap_net_raw+ep $S/usr/bin/ping; fi
  # ns mtimes last: creating entries changes directory mtimes
  n=1
  for f in $(cd $S && /usr/bin/find . -depth ! -type l); do
    /usr/bin/touch -m -d "2021-0$((n % 9 + 1))-1$((n % 9)) 12:34:56.$((100000000 + n * 1234567))" "$S/$f"
    n=$((n + 1))
  done
  /usr/bin/touch -h -m -d '2020-01-02 03:04:05.987654321' $S/usr/passwd.link
  set +e
}
if (populate $S 0); then pass populate; else fail populate "building the source tree failed"; fi
zpool sync rpool

# manifest DIR > file: one line per entry with everything a restore must keep (not atime/ctime)
manifest() {
  # a missing directory (a failed restore) is one line, never a walk of the current directory
  [ -d "$1" ] || { echo "missing directory '$1'"; return; }
  (cd "$1" && /usr/bin/find . | LC_ALL=C /usr/bin/sort | while read -r p; do
    if [ -d "$p" ] && [ ! -L "$p" ]; then
      /usr/bin/stat -c '%n %F %a %u:%g %y' "$p"        # a dir's size counts its entries: not compared
    else
      /usr/bin/stat -c '%n %F %a %u:%g %s %h %y' "$p"
    fi
    [ -L "$p" ] && { echo "  -> $(readlink "$p")"; continue; }
    /usr/bin/getfacl -n -p "$p" 2>&1 | grep -v '^# file'
    /usr/bin/getfattr -h -d -m - -e hex "$p" 2>/dev/null | grep -v '^# file' | grep -v '^$'
    [ -f "$p" ] && /usr/bin/sha256sum "$p"
  done)
}
# compare NAME SRC DST: manifests equal and the sparse file keeps its holes
compare() {
  name=$1 src=$2 dst=$3
  zpool sync    # every pool: before a txg sync, `du` of fresh data is an estimate
  manifest "$src" > /tmp/m.src; manifest "$dst" > /tmp/m.dst
  # pct restore's `--skip-old-files` keeps the existing root directory as it is (GNU tar does
  # not touch it), so on the tar paths the root's mtime is PVE's behaviour, not proxborg's.
  if [ "${4:-}" = tar ]; then sed -i '1s/^\(\. directory [0-7]* [0-9:]*\) .*/\1 (root mtime not compared)/' /tmp/m.src /tmp/m.dst; fi
  cp /tmp/m.src $H/$name.src.manifest; cp /tmp/m.dst $H/$name.dst.manifest
  if [ ! -s /tmp/m.src ] || ! grep -q 'user.proxborg' /tmp/m.src || ! grep -q 'security.capability' /tmp/m.src \
     || ! grep -Eq 'default:user:(10)?1000:rwx' /tmp/m.src || ! grep -q '987654321' /tmp/m.src; then
    fail "$name-manifest" "source manifest lacks ACL/xattr/capability/ns entries (test setup broken)"
  fi
  if cmp -s /tmp/m.src /tmp/m.dst; then
    pass "$name-metadata-and-content"
  else
    fail "$name-metadata-and-content" "differs: $(diff /tmp/m.src /tmp/m.dst | grep '^[-+][^-+]' | head -6 | tr '\n' '|')"
  fi
  su=$(/usr/bin/du -k "$src/sparse" | cut -f1); du=$(/usr/bin/du -k "$dst/sparse" 2>/dev/null | cut -f1)
  if [ -n "$du" ] && [ "$du" -lt 1024 ]; then
    pass "$name-sparse-holes"
  else
    fail "$name-sparse-holes" "64 MiB sparse file uses ${du:-?} KiB after restore (source ${su} KiB)"
  fi
}

# ---------------------------------------------------------------- create from .zfs/snapshot, extract
say "proxborg init + create from .zfs/snapshot"
if proxborg init >/tmp/init.log 2>&1; then pass init; else fail init "$(tail -3 /tmp/init.log | tr '\n' ' ')"; fi
zfs snapshot rpool/data/subvol-100-disk-0@pb1 || fail snapshot "zfs snapshot failed"
SNAP=$S/.zfs/snapshot/pb1
if [ ! -f $SNAP/etc/passwd ]; then
  fail snapdir "$SNAP/etc/passwd not visible"
fi
if proxborg create ct100 $SNAP >/tmp/create.log 2>&1; then pass create-from-zfs-snapshot
else fail create-from-zfs-snapshot "$(tail -3 /tmp/create.log | tr '\n' ' ')"; fi

say "extract into rpool/data/subvol-101-disk-0"
D1=/rpool/data/subvol-101-disk-0
if proxborg extract ct100 -C $D1 >/tmp/extract.log 2>&1; then pass extract
else fail extract "$(tail -3 /tmp/extract.log | tr '\n' ' ')"; fi
compare extract $SNAP $D1

# ---------------------------------------------------------------- export-tar | tar with pct restore's flags
say "export-tar | tar xpf - (pct restore flags) into rpool/data/subvol-102-disk-0"
D2=/rpool/data/subvol-102-disk-0
# PVE-FACTS §1.2: tar xpf - --totals @COMMON_TAR_FLAGS -C root --skip-old-files --anchored --exclude ./dev/*
if (set -o pipefail 2>/dev/null; proxborg export-tar ct100 - | /usr/bin/tar xpf - --totals \
      --one-file-system -p --sparse --numeric-owner --acls --xattrs \
      --xattrs-include='user.*' --xattrs-include=security.capability \
      --warning=no-file-ignored --warning=no-xattr-write \
      -C $D2 --skip-old-files --anchored --exclude './dev/*') >/tmp/tar.log 2>&1; then
  pass export-tar-pipe
else
  fail export-tar-pipe "$(tail -3 /tmp/tar.log | tr '\n' ' ')"
fi
compare export-tar $SNAP $D2 tar

# ---------------------------------------------------------------- unprivileged: create --unprivileged, pct restore --unprivileged 1
say "unprivileged CT: create --unprivileged, export-tar | lxc-usernsexec tar into a new subvol"
U=/rpool/data/subvol-104-disk-0 D3=/rpool/data/subvol-105-disk-0
if (populate $U 100000); then pass populate-unprivileged; else fail populate-unprivileged "building the shifted tree failed"; fi
zfs snapshot rpool/data/subvol-104-disk-0@pb1
if proxborg create --unprivileged ct104 $U/.zfs/snapshot/pb1 >/tmp/create-unpriv.log 2>&1; then pass create-unprivileged
else fail create-unprivileged "$(tail -3 /tmp/create-unpriv.log | tr '\n' ' ')"; fi
chown 100000:100000 $D3     # PVE chowns a new subvol's root to the mapped root before extracting
if (set -o pipefail 2>/dev/null; proxborg export-tar ct104 - | /usr/bin/lxc-usernsexec -m u:0:100000:65536 -m g:0:100000:65536 -- \
      /usr/bin/tar xpf - --totals --one-file-system -p --sparse --numeric-owner --acls --xattrs \
      --xattrs-include='user.*' --xattrs-include=security.capability \
      --warning=no-file-ignored --warning=no-xattr-write \
      -C $D3 --skip-old-files --anchored --exclude './dev/*') >/tmp/tar-unpriv.log 2>&1; then
  pass export-tar-userns-pipe
else
  fail export-tar-userns-pipe "$(tail -3 /tmp/tar-unpriv.log | tr '\n' ' ')"
fi
compare unprivileged $U/.zfs/snapshot/pb1 $D3 tar

# ---------------------------------------------------------------- atomic multi-dataset snapshot
say "atomic multi-dataset snapshot"
zfs create -V 16M rpool/data/vm-103-disk-0
if zfs snapshot rpool/data/subvol-100-disk-0@multi rpool/data/subvol-101-disk-0@multi rpool/data/vm-103-disk-0@multi; then
  t=$(for d in subvol-100-disk-0 subvol-101-disk-0 vm-103-disk-0; do zfs get -H -p -o value createtxg rpool/data/$d@multi; done | sort -u)
  if [ "$(echo "$t" | wc -l)" = 1 ] && [ -n "$t" ]; then pass "atomic-snapshot-same-createtxg"
  else fail "atomic-snapshot-same-createtxg" "createtxg values: $(echo $t)"; fi
else
  fail "atomic-snapshot-same-createtxg" "zfs snapshot with three names failed"
fi

# ---------------------------------------------------------------- proxborg backup of a /path dataset target
say "proxborg /rpool/data/subvol-100-disk-0 (dataset target)"
# a PVE node with no guests: proxborg reads the cluster's VM list even for dataset targets
mkdir -p /etc/pve; [ -e /etc/pve/.vmlist ] || echo '{"version": 1, "ids": {}}' > /etc/pve/.vmlist
hostname pve1; mkdir -p /etc/pve/nodes/pve1/lxc /etc/pve/nodes/pve1/qemu-server; ln -sfn nodes/pve1 /etc/pve/local
before=$(proxborg list 2>/dev/null | wc -l)
if proxborg --repo $PROXBORG_REPO /rpool/data/subvol-100-disk-0 >/tmp/backup.log 2>&1; then
  pass backup-dataset-target
else
  fail backup-dataset-target "rc!=0: $(tail -4 /tmp/backup.log | tr '\n' ' ')"
fi
after=$(proxborg list 2>/dev/null | wc -l)
if [ "$after" -gt "$before" ]; then pass backup-dataset-new-archive
else fail backup-dataset-new-archive "archive count $before -> $after"; fi
left=$(zfs list -H -t all -o name | grep proxborg)
if [ -z "$left" ]; then pass backup-dataset-no-leftovers
else fail backup-dataset-no-leftovers "left behind: $(echo $left)"; fi

# ---------------------------------------------------------------- VM 201 on two zvols: zvol mode
# Real zvols (zfs-fuse has none): `proxborg 201` reads them with `zfs send` from one snapshot
# set, the next run incrementally from its bookmark. No udev here: zvol_dev finds /dev/zdN by
# the BLKZNAME ioctl that udev's zvol_id uses.
zvol_py() { python3 - "$@"; }
zvol_dev() { zvol_py "$1" <<'PY'
import fcntl, glob, os, sys, time
want = sys.argv[1]
for _ in range(200):
    for d in glob.glob("/dev/zd*"):
        if not d[7:].isdigit():
            continue
        try:
            fd = os.open(d, os.O_RDONLY)
            name = fcntl.ioctl(fd, 0x8100127D, b"\0" * 256).split(b"\0")[0].decode()
            os.close(fd)
        except OSError:
            continue
        if name == want:
            print(d)
            sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
PY
}
# rewrite FRACTION of the BLOCK-sized blocks of DEV at random (seeded), then optionally
# discard LEN bytes at OFF (BLKDISCARD, as a guest's TRIM arrives)
zvol_churn() { zvol_py "$@" <<'PY'
import fcntl, os, random, struct, sys
dev, block, fraction, seed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
fd = os.open(dev, os.O_RDWR)
size = os.lseek(fd, 0, os.SEEK_END)
rng = random.Random(seed)
blocks = rng.sample(range(size // block), max(1, int(size // block * fraction)))
for b in blocks:
    os.pwrite(fd, rng.randbytes(block), b * block)
if len(sys.argv) > 6:
    fcntl.ioctl(fd, 0x1277, struct.pack("QQ", int(sys.argv[5]), int(sys.argv[6])))
os.fsync(fd)
os.close(fd)
PY
}
# the archive's zvol records: "<drive> <incremental_from or -> <bookmark or -> <stream bytes>" per line
zvol_records() {
  proxborg info "$1" --json > /tmp/zinfo.json 2>/dev/null
  python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))["metadata"]
for r in m.get("zvols", []):
    print(r["drive"], r.get("incremental_from") or "-", r.get("bookmark") or "-", r["stream_bytes"])' /tmp/zinfo.json
}
zvol_sums() { echo "$(/usr/bin/sha256sum < $D0 | cut -c1-64) $(/usr/bin/sha256sum < $D1 | cut -c1-64)"; }
zvol_restored() { # ARCHIVE: the sums of its two drive images, extracted
  rm -rf /rpool/repo/x; mkdir -p /rpool/repo/x
  proxborg extract "$1" -C /rpool/repo/x drive-scsi0.raw drive-virtio1.raw >/tmp/zx.log 2>&1
  echo "$(/usr/bin/sha256sum < /rpool/repo/x/drive-scsi0.raw | cut -c1-64) $(/usr/bin/sha256sum < /rpool/repo/x/drive-virtio1.raw | cut -c1-64)"
  rm -rf /rpool/repo/x
}
zvol_backup() { # N: proxborg 201 into /tmp/zN.{json,log}; sets ZRC, ZARCH, ZSECS
  t0=$(up)
  proxborg 201 --vm-mode zvol --json >/tmp/z$1.json 2>/tmp/z$1.log; ZRC=$?
  ZSECS=$(awk -v a="$t0" -v b="$(up)" 'BEGIN {printf "%.1f", b - a}')
  ZARCH=$(sed -n 's/.*"archive": *"\([^"]*\)".*/\1/p' /tmp/z$1.json | head -1)
}
zvol_read_mib() { zvol_records "$1" | awk '{s += $4} END {printf "%.1f", s / 1048576}'; }

zvol_checks() {
  say "VM 201 on two zvols (zvol mode)"
  Z=tank/data
  if ! { zfs create -V 128M -o volblocksize=16K -o compression=off $Z/vm-201-disk-0 \
         && zfs create -V 64M -o volblocksize=16K $Z/vm-201-disk-1; }; then
    fail zvol-setup "zfs create -V failed"; return
  fi
  D0=$(zvol_dev $Z/vm-201-disk-0) D1=$(zvol_dev $Z/vm-201-disk-1)
  # disk 0: random data with a 16 MiB hole; disk 1: its first half
  zvol_py $D0 $D1 <<'PY'
import os, random, sys
rng = random.Random(201)
for dev, data in ((sys.argv[1], [(0, 48 << 20), (64 << 20, 64 << 20)]), (sys.argv[2], [(0, 32 << 20)])):
    fd = os.open(dev, os.O_RDWR)
    for off, n in data:
        for at in range(off, off + n, 1 << 20):
            os.pwrite(fd, rng.randbytes(1 << 20), at)
    os.fsync(fd)
    os.close(fd)
PY
  cat > $PROXBORG_PVE_ROOT/nodes/$PROXBORG_SIM_NODE/qemu-server/201.conf <<EOF
agent: 1
boot: order=scsi0
ide2: none,media=cdrom
memory: 512
name: zvm
scsi0: local-zfs:vm-201-disk-0,size=128M
virtio1: local-zfs:vm-201-disk-1,size=64M
EOF
  zvol_py $PROXBORG_PVE_ROOT/.vmlist $PROXBORG_SIM_NODE <<'PY'
import json, sys
p, node = sys.argv[1], sys.argv[2]
v = json.load(open(p))
v["ids"]["201"] = {"node": node, "type": "qemu", "version": 9}
json.dump(v, open(p, "w"))
PY
  echo RUNNING > $SIMDIR/state/201
  if [ -n "$D0" ] && [ -n "$D1" ] && [ "$(qm status 201 2>&1)" = "status: running" ]; then pass zvol-setup
  else fail zvol-setup "devices '$D0' '$D1', qm status: $(qm status 201 2>&1)"; return; fi

  say "proxborg 201: first run (full zfs send)"
  S1=$(zvol_sums)
  zvol_backup 1; A1=$ZARCH T1=$ZSECS
  R1=$(zvol_records "$A1")
  if [ $ZRC = 0 ] && [ -n "$A1" ] && [ "$(echo "$R1" | awk '$2 == "-" && $3 != "-"' | grep -c .)" = 2 ]; then pass zvol-first-full
  else fail zvol-first-full "rc=$ZRC archive='$A1' records: $(echo $R1); $(tail -2 /tmp/z1.log | tr '\n' ' ')"; fi
  if [ "$(zvol_restored "$A1")" = "$S1" ]; then pass zvol-first-restored-equal
  else fail zvol-first-restored-equal "$(tail -2 /tmp/zx.log | tr '\n' ' ')"; fi
  left=$(zfs list -H -t all -o name | grep proxborg)
  if [ "$(echo "$left" | grep -c '#proxborg-')" = 2 ] && [ "$(echo "$left" | grep -c .)" = 2 ]; then pass zvol-only-bookmarks-left
  else fail zvol-only-bookmarks-left "$(echo $left)"; fi
  ag=$SIMDIR/log/qm-agent-201.log
  if [ "$(grep -c fsfreeze-freeze $ag 2>/dev/null)" = 1 ] && [ "$(grep -c fsfreeze-thaw $ag)" = 1 ] \
     && qm guest cmd 201 fsfreeze-status 2>&1 | grep -q thawed; then pass zvol-agent-froze-and-thawed
  else fail zvol-agent-froze-and-thawed "agent log: $(cat $ag 2>&1 | tr '\n' ' ')"; fi

  say "1% of the blocks rewritten, one range discarded, the VM rebooted"
  zvol_churn $D0 16384 0.01 1 $((96 << 20)) $((4 << 20)) && zvol_churn $D1 16384 0.01 2
  qm stop 201 >/dev/null 2>&1; qm start 201 >/dev/null 2>&1
  S2=$(zvol_sums)
  zvol_backup 2; A2=$ZARCH T2=$ZSECS
  R2=$(zvol_records "$A2")
  N=$(zvol_read_mib "$A2") M=192
  P=$(echo "$N $M" | awk '{printf "%.2f", 100 * $1 / $2}')
  echo "zvol incremental: read $N MiB of $M MiB ($P%)"
  if [ $ZRC = 0 ] && [ "$(echo "$R2" | awk '$2 != "-" && $3 != "-"' | grep -c .)" = 2 ] \
     && awk -v p="$P" 'BEGIN {exit !(p > 0 && p <= 3)}'; then pass zvol-incremental-reads-le-3pct
  else fail zvol-incremental-reads-le-3pct "rc=$ZRC P=$P records: $(echo $R2); $(tail -2 /tmp/z2.log | tr '\n' ' ')"; fi
  if [ "$(zvol_restored "$A2")" = "$S2" ] && [ "$S2" != "$S1" ]; then pass zvol-incremental-restored-equal
  else fail zvol-incremental-restored-equal "$(tail -2 /tmp/zx.log | tr '\n' ' ')"; fi
  left=$(zfs list -H -t all -o name | grep proxborg)
  if [ "$(echo "$left" | grep -c '#proxborg-')" = 2 ] && [ "$(echo "$left" | grep -c .)" = 2 ]; then pass zvol-bookmark-moved-nothing-else-left
  else fail zvol-bookmark-moved-nothing-else-left "$(echo $left)"; fi

  say "bookmarks destroyed: a full read with a warning"
  for b in $(zfs list -H -t bookmark -o name | grep 'vm-201-disk-[01]#proxborg-'); do zfs destroy "$b"; done
  zvol_backup 3; A3=$ZARCH T3=$ZSECS
  R3=$(zvol_records "$A3")
  if [ $ZRC = 1 ] && [ "$(grep -c 'cannot read incrementally' /tmp/z3.log)" = 2 ] \
     && [ "$(echo "$R3" | awk '$2 == "-" && $3 != "-"' | grep -c .)" = 2 ]; then pass zvol-lost-bookmark-full-read-warned
  else fail zvol-lost-bookmark-full-read-warned "rc=$ZRC records: $(echo $R3); $(tail -3 /tmp/z3.log | tr '\n' ' ')"; fi
  echo "zvol bench: first run ${T1}s read $(zvol_read_mib "$A1") MiB; 1% churn ${T2}s read $N MiB; full re-read ${T3}s read $(zvol_read_mib "$A3") MiB (TCG, not a speed figure)"

  say "a PVE snapshot: the bookmark stays older, qm rollback works"
  if qm snapshot 201 before-update >/tmp/qmsnap.log 2>&1 && zfs list -H -o name $Z/vm-201-disk-0@before-update >/dev/null 2>&1
  then pass zvol-pve-snapshot; else fail zvol-pve-snapshot "$(tail -2 /tmp/qmsnap.log | tr '\n' ' ')"; fi
  SPRE=$(zvol_sums)
  zvol_churn $D0 16384 0.002 3 && zvol_churn $D1 16384 0.002 4
  SMID=$(zvol_sums)
  zvol_backup 4; A4=$ZARCH
  R4=$(zvol_records "$A4")
  if [ $ZRC = 0 ] && [ "$(echo "$R4" | awk '$2 != "-" && $3 == "-"' | grep -c .)" = 2 ] \
     && [ "$(zvol_restored "$A4")" = "$SMID" ]; then pass zvol-pve-snapshot-incremental-bookmark-kept
  else fail zvol-pve-snapshot-incremental-bookmark-kept "rc=$ZRC records: $(echo $R4); $(tail -2 /tmp/z4.log | tr '\n' ' ')"; fi
  # control: a bookmark newer than the snapshot does make the plain `zfs rollback` fail
  zfs snapshot $Z/vm-201-disk-1@ctl && zfs bookmark $Z/vm-201-disk-1@ctl $Z/vm-201-disk-1#ctl && zfs destroy $Z/vm-201-disk-1@ctl
  if zfs rollback $Z/vm-201-disk-1@before-update 2>/tmp/ctl.log; then fail zvol-rollback-control "rollback worked past a newer bookmark"
  else pass zvol-rollback-control; fi
  zfs destroy $Z/vm-201-disk-1#ctl
  if qm rollback 201 before-update >/tmp/qmrb.log 2>&1 && [ "$(zvol_sums)" = "$SPRE" ]; then pass zvol-qm-rollback-works
  else fail zvol-qm-rollback-works "$(tail -2 /tmp/qmrb.log | tr '\n' ' ')"; fi
  qm start 201 >/dev/null 2>&1
  zvol_backup 5; A5=$ZARCH
  if [ $ZRC = 0 ] && [ "$(zvol_restored "$A5")" = "$SPRE" ] \
     && [ "$(zvol_records "$A5" | awk '$2 != "-"' | grep -c .)" = 2 ]; then pass zvol-after-rollback-incremental-equal
  else fail zvol-after-rollback-incremental-equal "rc=$ZRC records: $(zvol_records "$A5" | tr '\n' ' '); $(tail -2 /tmp/z5.log | tr '\n' ' ')"; fi
  if proxborg check --verify-data >/tmp/zcheck.log 2>&1; then pass zvol-repo-check
  else fail zvol-repo-check "$(tail -2 /tmp/zcheck.log)"; fi
  qm delsnapshot 201 before-update >/dev/null 2>&1
  zfs destroy -r $Z/vm-201-disk-0 ; zfs destroy -r $Z/vm-201-disk-1
}

# ---------------------------------------------------------------- the simulated PVE node on OpenZFS
# pve/sim builds the same node as on the host (same scripts, same /etc/pve), with its pool on a
# real device; `proxborg 100:` etc. then run exactly as on a PVE host.
sim_checks() {
  say "pve/sim up: pool tank on /dev/vda2"
  SIMDIR=/var/lib/pvesim
  if ! PROXBORG_SIM_VDEV=/dev/vda2 PROXBORG_SIM_POOL=tank /opt/proxborg/pve/sim up $SIMDIR >/tmp/sim.env 2>/tmp/sim-up.log; then
    fail sim-up "$(tail -3 /tmp/sim-up.log | tr '\n' ' ')"; return
  fi
  eval "$(cat /tmp/sim.env)"
  acl=$(zfs get -H -o value acltype tank/data/subvol-100-disk-0)
  if { [ "$acl" = posix ] || [ "$acl" = posixacl ]; } && [ -x $SIMDIR/bin/pct ]; then pass sim-up; else fail sim-up "acltype=$acl"; return; fi
  export PROXBORG_REPO=/rpool/repo/sim
  proxborg init >/tmp/init-sim.log 2>&1 || { fail sim-init "$(tail -2 /tmp/init-sim.log | tr '\n' ' ')"; return; }
  mnt() { zfs get -H -o value mountpoint "tank/data/$1"; }
  ROOT=$(mnt subvol-100-disk-0) MP0=$(mnt subvol-100-disk-1)
  # CT 100 gets files with everything only real ZFS stores: ACLs, xattrs, a v3 capability,
  # set-id bits, ns mtimes, a sparse file (host ids shifted by 100000, as PVE stores them)
  if (populate $ROOT/opt/special 100000); then pass sim-populate; else fail sim-populate "populate failed"; fi

  # A writer outside the container (so no freeze stops it) appends to a file on rootfs and one
  # on mp0 in lockstep: at every instant lines(b) is lines(a) or lines(a)-1. Only a snapshot
  # set taken at one instant keeps that in the archive.
  A=$ROOT/root/lockstep.a B=$MP0/lockstep.b
  rm -f /tmp/stop-writer
  (i=0; while [ ! -e /tmp/stop-writer ]; do i=$((i + 1)); echo $i >> $A; echo $i >> $B; done) &
  WPID=$!
  sleep 2
  # control: two snapshots one after the other do see them out of step, so the check can fail
  zfs snapshot tank/data/subvol-100-disk-0@ctl; zfs snapshot tank/data/subvol-100-disk-1@ctl
  ca=$(wc -l < $ROOT/.zfs/snapshot/ctl/root/lockstep.a) cb=$(wc -l < $MP0/.zfs/snapshot/ctl/lockstep.b)
  zfs destroy tank/data/subvol-100-disk-0@ctl; zfs destroy tank/data/subvol-100-disk-1@ctl
  if [ "$cb" -gt "$ca" ]; then pass atomicity-control-sequential-snapshots-out-of-step
  else fail atomicity-control-sequential-snapshots-out-of-step "a=$ca b=$cb: the writer is too slow to tell"; fi

  say "proxborg 100: (writer running)"
  proxborg 100: --json >/tmp/ct100.json 2>/tmp/ct100.log; rc=$?
  touch /tmp/stop-writer; wait $WPID
  ARCH=$(sed -n 's/.*"archive": *"\([^"]*\)".*/\1/p' /tmp/ct100.json | head -1)
  # exit 1: the bind mount mp2 is skipped with a warning, as on the host
  if [ $rc = 1 ] && [ -n "$ARCH" ]; then pass ct100-backup
  else fail ct100-backup "rc=$rc archive='$ARCH': $(tail -3 /tmp/ct100.log | tr '\n' ' ')"; fi
  if grep -q "not atomically" /tmp/ct100.log; then fail ct100-no-fallback "$(grep 'not atomically' /tmp/ct100.log)"
  else pass ct100-no-fallback; fi
  hist=$(zpool history tank | grep 'zfs snapshot' | grep '@proxborg-')
  if [ "$(echo "$hist" | grep -c .)" = 1 ] && echo "$hist" | grep -q 'subvol-100-disk-0@proxborg-' \
     && echo "$hist" | grep -q 'subvol-100-disk-1@proxborg-'; then pass ct100-one-snapshot-call
  else fail ct100-one-snapshot-call "zpool history: $(echo $hist)"; fi
  txgs=$(zpool history -i tank | grep -E '\] snapshot tank/data/subvol-100-disk-[01]@proxborg-' | sed -n 's/.*\[txg:\([0-9]*\)\].*/\1/p')
  if [ "$(echo "$txgs" | grep -c .)" = 2 ] && [ "$(echo "$txgs" | sort -u | grep -c .)" = 1 ]; then pass ct100-snapshot-set-one-txg
  else fail ct100-snapshot-set-one-txg "txgs: $(echo $txgs)"; fi
  rm -rf /tmp/ls; mkdir /tmp/ls
  proxborg extract "$ARCH" -C /tmp/ls root/lockstep.a srv/data/lockstep.b >/tmp/ls.log 2>&1
  la=$(wc -l < /tmp/ls/root/lockstep.a) lb=$(wc -l < /tmp/ls/srv/data/lockstep.b)
  if [ "${la:-0}" -gt 0 ] && [ "$lb" -le "$la" ] && [ "$lb" -ge $((la - 1)) ]; then pass ct100-lockstep-in-step
  else fail ct100-lockstep-in-step "archive has a=$la b=$lb lines"; fi
  left=$(zfs list -H -t all -o name | grep proxborg; grep proxborg /proc/mounts)
  if [ -z "$left" ]; then pass ct100-no-leftovers; else fail ct100-no-leftovers "$(echo $left)"; fi

  say "export-tar | pct restore 120 --unprivileged 1"
  if (set -o pipefail; proxborg export-tar "$ARCH" - | pct restore 120 - --rootfs local-zfs:1 \
        --mp0 local-zfs:1,mp=/srv/data --unprivileged 1) >/tmp/restore.log 2>&1; then pass pct-restore
  else fail pct-restore "$(tail -3 /tmp/restore.log | tr '\n' ' ')"; cp /tmp/restore.log $H/pct-restore.log; fi
  NROOT=$(mnt subvol-120-disk-0) NMP0=$(mnt subvol-120-disk-1)
  compare pct-restore $ROOT/opt/special $NROOT/opt/special
  rm -f $A $B $NROOT/root/lockstep.a $NMP0/lockstep.b
  manifest $MP0 > /tmp/m0.src; manifest $NMP0 > /tmp/m0.dst
  # the rm of lockstep.b just set both roots' mtimes to two slightly different "now"s
  sed -i '1s/^\(\. directory [0-7]* [0-9:]*\) .*/\1 (root mtime not compared)/' /tmp/m0.src /tmp/m0.dst
  if [ -s /tmp/m0.src ] && cmp -s /tmp/m0.src /tmp/m0.dst; then pass pct-restore-mp0
  else fail pct-restore-mp0 "$(diff /tmp/m0.src /tmp/m0.dst | grep '^[-+][^-+]' | head -4 | tr '\n' '|')"; fi
  hn=$(/usr/bin/stat -c %u:%g $ROOT/etc/hostname) nhn=$(/usr/bin/stat -c %u:%g $NROOT/etc/hostname)
  if [ "$hn" = 100000:100000 ] && [ "$nhn" = "$hn" ]; then pass pct-restore-shifted-owners
  else fail pct-restore-shifted-owners "etc/hostname $hn -> $nhn"; fi

  gui_checks

  say "proxborg 100: --idmap-via overlay (fuse-overlayfs) gives what in-process translation gives"
  # fuse-overlayfs maps owners but not ACL qualifiers or capability root ids; the export-tar
  # streams (everything but the synthesized ./etc/vzdump) must be byte for byte the same
  for via in in-process overlay; do
    proxborg 100: --idmap-via $via --files-cache off --json >/tmp/via-$via.json 2>/tmp/via-$via.log
    a=$(sed -n 's/.*"archive": *"\([^"]*\)".*/\1/p' /tmp/via-$via.json | head -1)
    proxborg export-tar "$a" - --exclude ./etc/vzdump 2>>/tmp/via-$via.log | sha256sum | cut -c1-64 > /tmp/via-$via.sum
    # every member with its pax records (ACLs, xattrs, sparse maps), to show where they differ
    proxborg export-tar "$a" - --exclude ./etc/vzdump 2>/dev/null | python3 -c 'import sys, tarfile
for m in tarfile.open(fileobj=sys.stdin.buffer, mode="r|"):
    print(m.name, m.uid, m.gid, oct(m.mode), m.mtime, m.size, m.type, m.linkname, sorted(m.pax_headers.items()))' > /tmp/via-$via.tv 2>&1
    sleep 1    # archive names have one-second resolution
  done
  rm -rf /tmp/ov; mkdir /tmp/ov
  proxborg extract "$a" -C /tmp/ov opt/special/etc/aclfile >/dev/null 2>&1   # $a: the overlay archive
  ovacl=$(/usr/bin/getfacl -n -p /tmp/ov/opt/special/etc/aclfile 2>&1 | grep -E '^(user|group):[0-9]')
  if [ "$(echo $ovacl)" = "user:1000:rwx group:1001:r-x" ]; then pass overlay-acl-qualifiers-container-side
  else fail overlay-acl-qualifiers-container-side "got: $(echo $ovacl)"; fi
  if [ -s /tmp/via-overlay.sum ] && cmp -s /tmp/via-in-process.sum /tmp/via-overlay.sum \
     && grep -q 'opt/special/usr/bin/ping' /tmp/via-overlay.tv; then pass overlay-equals-in-process
  else fail overlay-equals-in-process "streams differ ($(cat /tmp/via-in-process.sum | cut -c1-12) vs $(cat /tmp/via-overlay.sum | cut -c1-12)); $(tail -1 /tmp/via-overlay.log)"; fi
  left=$(grep -c fuse-overlayfs /proc/mounts)
  if [ "$left" = 0 ]; then pass overlay-unmounted; else fail overlay-unmounted "$left fuse-overlayfs mounts left"; fi

  say "proxborg 102: (custom lxc.idmap)"
  proxborg 102: --json >/tmp/ct102.json 2>/tmp/ct102.log; rc=$?
  A102=$(sed -n 's/.*"archive": *"\([^"]*\)".*/\1/p' /tmp/ct102.json | head -1)
  proxborg list "$A102" > /tmp/ct102.list 2>&1
  own() { awk -v p="$1" '$NF == p {print $2}' /tmp/ct102.list; }
  got="$(own ./etc/hostname) $(own ./home/shared.txt) $(own ./root/outside-map.txt) $(own ./var/www/html/index.html)"
  if [ $rc = 0 ] && [ "$got" = "0/0 1000/1000 65534/65534 33/33" ]; then pass ct102-custom-idmap
  else fail ct102-custom-idmap "rc=$rc owners: $got; $(tail -2 /tmp/ct102.log | tr '\n' ' ')"; fi

  say "SIGKILL in the middle of proxborg 100:, then proxborg cleanup"
  dd if=/dev/urandom of=$MP0/big.bin bs=1M count=160 2>/dev/null
  proxborg 100: --files-cache off >/tmp/killed.log 2>&1 &
  KPID=$!
  n=0
  while ! zfs list -H -t snapshot -o name | grep -q '@proxborg-' && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
  sleep 1
  kill -9 $KPID; wait $KPID 2>/dev/null
  left=$(zfs list -H -t all -o name | grep proxborg)
  if [ -n "$left" ]; then pass sigkill-leaves-snapshots
  else fail sigkill-leaves-snapshots "nothing to clean (the backup ended before the kill?): $(tail -2 /tmp/killed.log | tr '\n' ' ')"; fi
  if proxborg cleanup >/tmp/cleanup.log 2>&1; then :; else fail cleanup "rc!=0: $(tail -2 /tmp/cleanup.log)"; fi
  left=$(zfs list -H -t all -o name | grep proxborg; grep proxborg /proc/mounts)
  if [ -z "$left" ] && [ -n "$(cat /tmp/cleanup.log)" ]; then pass sigkill-then-cleanup-leaves-nothing
  else fail sigkill-then-cleanup-leaves-nothing "left: $(echo $left)"; fi
  state=$(cat $SIMDIR/state/100)
  if [ "$state" = RUNNING ]; then pass sigkill-container-thawed; else fail sigkill-container-thawed "state $state"; fi
  rm -f $MP0/big.bin
  if proxborg check >/tmp/check-sim.log 2>&1; then pass sim-repo-check; else fail sim-repo-check "$(tail -2 /tmp/check-sim.log)"; fi
  zvol_checks
  /opt/proxborg/pve/sim down $SIMDIR 2>/tmp/sim-down.log || fail sim-down "$(tail -2 /tmp/sim-down.log)"
}
# ---------------------------------------------------------------- the storage plugin: GUI backup and restore
# The backup-provider storage plugin (packaging/perl) through its harness pve/lib/vzdump-provider,
# as tests/provider.rs drives it on zfs-fuse, but on real OpenZFS, where the CT's files carry ACLs,
# xattrs and a v3 capability: a GUI job (`vzdump 100 --storage proxborg`, run_in_userns for
# backup_container), the storage's content list, the restore dialog's config (extractconfig),
# then `pct restore` of it into a new VMID through the `directory` mechanism (`proxborg mount` of
# the archive, PVE's tar pipe into lxc-usernsexec) into a new PVE-style subvol. Called from
# sim_checks (the node is up, CT 100 populated, nothing writes it any more).
gui_strip() { # gui_strip < manifest: drop the entries a GUI restore does not carry over unchanged
  # ./srv: mp0's mount point (pct makes it; here the harness, in the snapshot's clone) and mp0
  # itself (compared on its own); ./etc/vzdump: vzdump's pct.conf/pct.fw, restored as PVE does;
  # tmp/session.tmp, var/tmp/cache.tmp, var/run/sshd.pid: vzdump's standard excludes;
  # (proxborg also leaves out lost+found, as vzdump's tar does for a CT in a userns);
  # root/host-owned.txt: host uid 0, outside the CT's map (nobody inside, so not restorable as 0)
  awk '/^\.[ \/]/ { skip = ($1 ~ /^\.\/(srv|etc\/vzdump|tmp\/session\.tmp|var\/tmp\/cache\.tmp|var\/run\/sshd\.pid|lost\+found|root\/host-owned\.txt)(\/|$)/) }
       !skip' | sed '1s/^\(\. directory [0-7]* [0-9:]*\) .*/\1 (root mtime not compared)/'
}
gui_checks() {
  say "GUI: vzdump 100 --storage proxborg (backup-provider plugin), then pct restore 9100 through directory"
  PREPO=$SIMDIR/proxborg-repo
  rm -rf $PREPO
  # PVE runs the plugin without proxborg's variables: it takes repo and passphrase from
  # storage.cfg and /etc/pve/priv/storage/proxborg.pw
  pve() { (unset PROXBORG_REPO PROXBORG_PASSPHRASE; export PROXBORG_BIN=/usr/local/bin/proxborg; "$@"); }
  echo "$PROXBORG_PASSPHRASE" | tr -d '\n' > /tmp/gui.pw
  if PROXBORG_REPO=$PREPO proxborg init --encryption repokey >/tmp/gui-init.log 2>&1 \
     && pve vzdump-provider add proxborg --repo $PREPO --passphrase-file /tmp/gui.pw >>/tmp/gui-init.log 2>&1 \
     && pve vzdump 100 --storage proxborg --mode snapshot --notes-template '{{guestname}}' >/tmp/gui-volid 2>/tmp/gui-backup.log; then :; fi
  VOLID=$(tail -1 /tmp/gui-volid 2>/dev/null)
  case $VOLID in
    proxborg:backup/dump-100-*)
      if grep -q 'creating proxborg archive' /tmp/gui-backup.log && ! grep -q '^ERROR' /tmp/gui-backup.log; then pass gui-backup
      else fail gui-backup "volid $VOLID but the log: $(grep -E '^(ERROR|WARN)' /tmp/gui-backup.log | head -2 | tr '\n' ' ')"; fi;;
    *) fail gui-backup "no volid: $(tail -3 /tmp/gui-init.log /tmp/gui-backup.log | tr '\n' ' ')";;
  esac
  pve vzdump-provider list proxborg 100 >/tmp/gui-list.json 2>/tmp/gui-list.log
  got=$(python3 -c 'import json, sys
v = [e for e in json.load(open("/tmp/gui-list.json")) if e["volid"] == sys.argv[1]]
print(" ".join(str(v[0][k]) for k in ("subtype", "vmid", "content", "notes", "encrypted")) if v else "not listed")' "$VOLID" 2>&1)
  if [ "$got" = "lxc 100 backup tank proxborg repokey" ]; then pass gui-list
  else fail gui-list "got: $got $(tail -1 /tmp/gui-list.log)"; fi
  # the restore dialog's config is CT 100's as `pct config` shows it, without snapshot state
  pve vzdump-provider extractconfig "$VOLID" >/tmp/gui-conf.txt 2>/tmp/gui-conf.log
  pct config 100 | grep -Ev '^(parent|lock):' >/tmp/gui-conf.want
  if [ -s /tmp/gui-conf.txt ] && cmp -s /tmp/gui-conf.want /tmp/gui-conf.txt && grep -q '^unprivileged: 1$' /tmp/gui-conf.txt \
     && grep -q '^mp0: .*mp=/srv/data' /tmp/gui-conf.txt; then pass gui-extractconfig
  else fail gui-extractconfig "$(diff /tmp/gui-conf.want /tmp/gui-conf.txt | grep '^[-+][^-+]' | head -3 | tr '\n' '|') $(tail -1 /tmp/gui-conf.log)"; fi

  # pct restore 9100: PVE allocates the new rootfs subvol (as ZFSPoolPlugin does: posixacl,
  # xattr=sa), then Create.pm restores into it through the plugin's archive directory
  zfs create -o acltype=posixacl -o xattr=sa tank/data/subvol-9100-disk-0
  GROOT=$(mnt subvol-9100-disk-0)
  if pve vzdump-provider restore 9100 "$VOLID" --rootdir $GROOT >/tmp/gui-restore.log 2>&1 \
     && grep -q "restored $VOLID into $GROOT" /tmp/gui-restore.log && [ -f $GROOT/etc/vzdump/pct.conf ]; then pass gui-restore
  else fail gui-restore "$(tail -3 /tmp/gui-restore.log | tr '\n' ' ')"; fi
  compare gui-restore $ROOT/opt/special $GROOT/opt/special
  manifest $MP0 > /tmp/gm0.src; manifest $GROOT/srv/data > /tmp/gm0.dst
  if grep -q '^\./' /tmp/gm0.src && cmp -s /tmp/gm0.src /tmp/gm0.dst; then pass gui-restore-mp0
  else fail gui-restore-mp0 "$(diff /tmp/gm0.src /tmp/gm0.dst | grep '^[-+][^-+]' | head -4 | tr '\n' '|')"; fi
  manifest $ROOT | gui_strip > /tmp/gw.src; manifest $GROOT | gui_strip > /tmp/gw.dst
  cp /tmp/gw.src $H/gui-whole.src.manifest; cp /tmp/gw.dst $H/gui-whole.dst.manifest
  if grep -q '^\./etc/hostname ' /tmp/gw.src && grep -q 'security.capability' /tmp/gw.src && cmp -s /tmp/gw.src /tmp/gw.dst; then
    pass gui-restore-whole-rootfs
  else fail gui-restore-whole-rootfs "$(diff /tmp/gw.src /tmp/gw.dst | grep '^[-+][^-+]' | head -4 | tr '\n' '|')"; fi
  # restore_container_cleanup: the FUSE mount and its directory gone; vzdump's snapshot and clones too
  left=$(grep -E 'proxborg|fuse' /proc/mounts; ls /run/proxborg-plugin 2>/dev/null | grep '^restore-'; zfs list -H -t all -o name | grep -E '@vzdump|vzsnap')
  if [ -z "$left" ]; then pass gui-no-leftovers; else fail gui-no-leftovers "$(echo $left)"; fi
  cp /tmp/gui-* $H/ 2>/dev/null
}

sim_checks
export PROXBORG_REPO=/rpool/repo/r

cp /tmp/*.log /tmp/*.json /tmp/via-* $H/ 2>/dev/null
proxborg list > $H/archives.txt 2>&1

zpool export rpool || fail pool-export "zpool export rpool failed (busy?)"
finish
