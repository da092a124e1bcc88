#!/bin/bash
# openzfs-vm.sh — (adapted for proxborg's tests/openzfs/run from /work/shared/openzfs-vm) run REAL OpenZFS (kernel module) inside a throw-away qemu VM
# (TCG software emulation) on a Debian 12 host that cannot load kernel modules
# and whose /dev/kvm is PVM-only (stock kernels fail under -accel kvm).
#
# Tested on: Debian 12 host, 2 cores, qemu 10.0.2 (bookworm-backports),
#            kernel 6.12.95+deb12-amd64 (bookworm-backports), zfs-dkms 2.3.2 (bookworm-backports)
#            and kernel 6.1.0-xx-amd64 + zfs 2.1.11 (bookworm) via KVER=/ZVER= overrides.
#
# Subcommands (run in order; each is idempotent):
#   setup    apt-get installs qemu/dkms/headers/busybox/acl/attr, downloads zfs-dkms +
#            zfsutils *.debs and only EXTRACTS them (both conflict with / break zfs-fuse,
#            so never `apt-get install` them on a host that also uses zfs-fuse)
#   build    dkms add + dkms build + dkms install -k $KVER   (module is NOT loaded on the host)
#   initrd   builds $WORK/initrd.img (busybox + zfs userspace + libs + spl/zfs/virtio/9p modules)
#   run [guest-script]
#            boots the VM with a fresh raw disk ($WORK/disk.img) and a 9p share ($WORK/share
#            mounted at /mnt/host in the guest); runs guest-script (default: built-in smoke test)
#            in the guest, prints everything on the serial console, powers off.
#            Files written to /mnt/host in the guest appear in $WORK/share on the host.
#   all      setup + build + initrd + run
#
# Environment overrides:
#   WORK=/var/tmp/openzfs-vm  KVER=6.12.95+deb12-amd64  ZVER=2.3.2  SUITE=bookworm-backports
#   MEM=2G SMP=2 DISK_SIZE=2G  ACCEL=tcg VM_TIMEOUT=900   EXTRA_BIN="/path/to/static-binary ..." (copied to /usr/local/bin)
#   EXTRA_DIRS="hostdir:guestdir ..."  WITH_PVE_SIM=1 (bash/python3/perl/GNU tools)  PARTS=1 (vda1..vdaN)
#   e.g. the bookworm (non-backports) combination:
#   KVER=6.1.0-56-amd64 ZVER=2.1.11 SUITE=bookworm WORK=/var/tmp/openzfs-vm61 ./openzfs-vm.sh all
set -euo pipefail

WORK=${WORK:-/var/cache/proxborg-openzfs}
KVER=${KVER:-6.12.95+deb12-amd64}
ZVER=${ZVER:-2.3.2}
SUITE=${SUITE:-bookworm-backports}        # suite of zfs-dkms / zfsutils-linux
QSUITE=${QSUITE:-bookworm-backports}      # suite of qemu (10.0 in backports, 7.2 in bookworm)
MEM=${MEM:-2G}
SMP=${SMP:-2}
DISK_SIZE=${DISK_SIZE:-2G}
ACCEL=${ACCEL:-tcg}
VM_TIMEOUT=${VM_TIMEOUT:-900}             # seconds before the VM is killed
EXTRA_BIN=${EXTRA_BIN:-}
EXTRA_DIRS=${EXTRA_DIRS:-}                # "HOSTDIR:GUESTDIR ..." copied into the initrd
WITH_PVE_SIM=${WITH_PVE_SIM:-}            # non-empty: bash, python3 and GNU tools for pve/sim
PARTS=${PARTS:-1}                         # partitions on the disk (vda1..vdaN, equal sizes)
export DEBIAN_FRONTEND=noninteractive

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
timed() { local s; s=$(date +%s%N); "$@"; local rc=$?; log "TIME $(( ($(date +%s%N)-s)/1000000 ))ms rc=$rc: $*"; return $rc; }

mkdir -p "$WORK"

# ---------------------------------------------------------------- setup
ensure_sources() {
  # zfs-dkms/zfsutils live in Debian's contrib; the 6.12 kernel, zfs 2.3 and qemu 10 in bookworm-backports.
  local f=/etc/apt/sources.list.d/proxborg-lab.sources
  if ! apt-cache policy zfs-dkms 2>/dev/null | grep -q backports; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > "$f"
    apt-get update -qq
  fi
}

do_setup() {
  # A stamp keeps warm runs from touching apt at all; it is written only after a full setup.
  if [ -e "$WORK/setup.done" ] && command -v qemu-system-x86_64 >/dev/null && command -v dkms >/dev/null \
     && [ -d "/usr/src/linux-headers-$KVER" ] && [ -d "$WORK/zfsuser/sbin" ]; then
    log "setup: already done ($WORK/setup.done)"; return 0
  fi
  ensure_sources
  local kpkg="linux-image-$KVER" hpkg="linux-headers-$KVER"
  # Never install zfs-dkms / zfsutils-linux: they Break/Conflict zfs-fuse.
  # no-autoinstall: keep the headers' postinst hook from building already-registered dkms
  # modules for $KVER (we build explicitly, and time it, in `build`).
  local noauto=0; [ -e /etc/dkms/no-autoinstall ] || { mkdir -p /etc/dkms; touch /etc/dkms/no-autoinstall; noauto=1; }
  apt-get install -y --no-install-recommends \
      qemu-system-x86/"$QSUITE" qemu-system-common/"$QSUITE" qemu-system-data/"$QSUITE" seabios/"$QSUITE" \
      dkms busybox-static acl attr xz-utils cpio kmod fdisk fuse-overlayfs fuse3 python3 \
      "$hpkg" 2>&1 | grep -vE '^W: Target|Reading database' | tail -3 || true
  [ $noauto = 1 ] && rm -f /etc/dkms/no-autoinstall
  mkdir -p "$WORK/debs"
  cd "$WORK/debs"
  # kernel image: only extracted (not installed) -> $WORK/kernel/{boot,lib/modules}
  if [ ! -d "$WORK/kernel/lib/modules/$KVER" ]; then
    apt-get download "$kpkg" 2>&1 | grep -v '^W:' | tail -1
    dpkg -x "$kpkg"_*.deb "$WORK/kernel"
  fi
  # zfs sources + userspace: only extracted
  local zsuf
  zsuf=$(apt-cache madison zfs-dkms 2>/dev/null | awk -v s="$SUITE" -v z="$ZVER" '$3 ~ "^"z && $0 ~ s"/" {print $3; exit}')
  [ -n "$zsuf" ] || { log "no zfs-dkms $ZVER in $SUITE"; exit 1; }
  log "zfs package version: $zsuf"
  local libzfs libzpool
  case $ZVER in 2.1*) libzfs=libzfs4linux; libzpool=libzpool5linux;; *) libzfs=libzfs6linux; libzpool=libzpool6linux;; esac
  for p in zfs-dkms zfsutils-linux $libzfs $libzpool libnvpair3linux libuutil3linux; do
    ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p=$zsuf" 2>&1 | grep -v '^W:' | tail -1
  done
  rm -rf "$WORK/zfsdkms" "$WORK/zfsuser"
  dpkg -x zfs-dkms_*.deb "$WORK/zfsdkms"
  for p in zfsutils-linux $libzfs $libzpool libnvpair3linux libuutil3linux; do dpkg -x "${p}"_*.deb "$WORK/zfsuser"; done
  touch "$WORK/setup.done"
}

# ---------------------------------------------------------------- build
do_build() {
  if ls "$WORK"/zfs-ko/zfs.ko* >/dev/null 2>&1; then log "build: cached module in $WORK/zfs-ko"; return 0; fi
  local src="$WORK/zfsdkms/usr/src/zfs-$ZVER"
  [ -d "$src" ] || { log "run setup first"; exit 1; }
  if ! dkms status "zfs/$ZVER" 2>/dev/null | grep -q .; then
    dkms add "$src"
  fi
  if ! dkms status "zfs/$ZVER" -k "$KVER" | grep -qE 'built|installed'; then
    timed dkms build "zfs/$ZVER" -k "$KVER" > "$WORK/dkms-build.log" 2>&1 || { tail -40 "$WORK/dkms-build.log"; find /var/lib/dkms/zfs/$ZVER/build -name make.log -exec tail -40 {} \; ; exit 1; }
  fi
  if ! dkms status "zfs/$ZVER" -k "$KVER" | grep -q installed; then
    timed dkms install "zfs/$ZVER" -k "$KVER" > "$WORK/dkms-install.log" 2>&1 || { tail -20 "$WORK/dkms-install.log"; exit 1; }
  fi
  dkms status "zfs/$ZVER"
  mkdir -p "$WORK/zfs-ko.tmp"; cp /lib/modules/"$KVER"/updates/dkms/*.ko* "$WORK/zfs-ko.tmp/"
  rm -rf "$WORK/zfs-ko"; mv "$WORK/zfs-ko.tmp" "$WORK/zfs-ko"
}

# ---------------------------------------------------------------- initrd
copy_with_libs() { # copy_with_libs ROOT FILE... : copies binaries + their shared libs
  local root=$1; shift
  local f lib
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"
    local real=$f; [ -e "$WORK/zfsuser$f" ] && real="$WORK/zfsuser$f"   # prefer extracted OpenZFS over host (zfs-fuse!)
    cp -L "$real" "$root$f"
    LD_LIBRARY_PATH="$WORK/zfsuser/lib/x86_64-linux-gnu:$WORK/zfsuser/usr/lib/x86_64-linux-gnu" \
      ldd "$real" 2>/dev/null | awk '/=> \//{print $3} /^\t\/lib64/{print $1}' | while read -r lib; do
        case $lib in
          "$WORK"/zfsuser/*) dst=${lib#"$WORK"/zfsuser};;
          *) dst=$lib;;
        esac
        [ -e "$root$dst" ] || { mkdir -p "$root$(dirname "$dst")"; cp -L "$lib" "$root$dst"; }
      done
  done
}

# The simulated PVE node (pve/sim) runs in the guest as on the host: bash, python3 with the
# standard library it uses, and GNU coreutils/sed/grep/awk in /usr/bin, which bash finds before
# busybox's applets in /bin (PATH=/usr/local/bin:/usr/bin:...).
add_pve_sim_runtime() {
  local R=$1 f tools=() py
  for f in $(dpkg -L coreutils | grep -E '^/(usr/)?bin/[^/]+$'); do
    f=/usr/bin/${f##*/}; [ -e "$f" ] && tools+=("$f")
  done
  for f in sed grep mawk flock pgrep newuidmap newgidmap umount gzip cksum; do
    [ -e "/usr/bin/$f" ] && tools+=("/usr/bin/$f")
  done
  # proxborg --idmap-via overlay (FUSE is built into Debian's kernel: /dev/fuse comes with devtmpfs)
  for f in fuse-overlayfs fusermount3; do
    [ -x "/usr/bin/$f" ] || { log "/usr/bin/$f missing: apt-get install fuse-overlayfs fuse3"; exit 1; }
    tools+=("/usr/bin/$f")
  done
  # the backup-provider harness (pve/lib/vzdump-provider, Perl): util-linux unshare for its
  # worker's mount namespace (busybox's has no --propagation)
  tools+=(/usr/bin/unshare)
  copy_with_libs "$R" /bin/bash "${tools[@]}"
  ln -sf mawk "$R/usr/bin/awk"
  add_perl "$R"
  py=$(readlink -f /usr/bin/python3); py=${py##*/}
  [ -d "/usr/lib/$py" ] || { log "no /usr/lib/$py: install Debian's python3"; exit 1; }
  copy_with_libs "$R" "/usr/bin/$py"
  ln -sf "$py" "$R/usr/bin/python3"
  (cd /usr/lib && tar cf - --exclude=__pycache__ --exclude="$py/test" --exclude="$py/idlelib" \
      --exclude="$py/tkinter" --exclude="$py/turtledemo" --exclude="$py/ensurepip" --exclude="$py/lib2to3" \
      --exclude="$py/pydoc_data" --exclude="$py/site-packages" --exclude="$py/dist-packages" \
      --exclude="$py/config-*" --exclude="$py/lib-dynload/_tkinter*" "$py") | tar xf - -C "$R/usr/lib"
  copy_with_libs "$R" "/usr/lib/$py/lib-dynload/"*.so
}

# Perl for the provider harness and the plugin (packaging/perl): the interpreter, all of
# perl-base (pure-Perl and XS core modules, ~5 MB: POSIX, Fcntl, File::Temp, IPC::Open3, ...)
# and the three perl-modules files they load (checked with %INC after loading the harness's
# modules and the plugin); nothing else of /usr/share/perl.
add_perl() {
  local R=$1 f pb=/usr/lib/x86_64-linux-gnu/perl-base sp
  sp=$(perl -MConfig -e 'print $Config{privlib}')          # /usr/share/perl/5.36
  copy_with_libs "$R" /usr/bin/perl
  mkdir -p "$R$pb"; cp -a "$pb/." "$R$pb/"
  for f in FindBin.pm JSON/PP.pm JSON/PP/Boolean.pm; do
    [ -e "$sp/$f" ] || { log "$sp/$f missing: apt-get install perl-modules-5.36"; exit 1; }
    mkdir -p "$R$sp/$(dirname "$f")"; cp -L "$sp/$f" "$R$sp/$f"
  done
}

do_initrd() {
  local R="$WORK/initrd-root" M
  ls "$WORK"/zfs-ko/zfs.ko* >/dev/null 2>&1 || { log "zfs.ko missing in $WORK/zfs-ko, run build"; exit 1; }
  rm -rf "$R"; mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,mnt/host,root,lib/modules/"$KVER",usr/local/bin}
  cp /bin/busybox "$R/bin/busybox"
  for a in $("$R/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
  # zfs userspace (extracted from the .debs) + acl/attr tools + libs
  local zbins=""
  for b in /sbin/zfs /sbin/zpool /sbin/zdb /sbin/zstream /sbin/mount.zfs; do
    [ -e "$WORK/zfsuser$b" ] && zbins="$zbins $b"
  done
  # .zfs/snapshot automount: the zfs module runs `/usr/bin/env mount -i -t zfs -n DS DIR` (PATH
  # /sbin:/usr/sbin:/bin:/usr/bin); busybox has neither /usr/bin/env nor `mount -i`, so the
  # util-linux mount (which calls /sbin/mount.zfs) replaces busybox's applet link.
  rm -f "$R/bin/mount"
  # shellcheck disable=SC2086
  copy_with_libs "$R" /usr/bin/env /bin/mount $zbins /usr/bin/getfacl /usr/bin/setfacl /usr/bin/getfattr /usr/bin/setfattr /usr/bin/stat /usr/bin/tar /usr/bin/touch \
      /usr/sbin/setcap /usr/sbin/getcap /usr/bin/du /usr/bin/find /usr/bin/sort /usr/bin/cmp /usr/bin/sha256sum $(command -v lxc-usernsexec || true)
  # each extra binary once, in /usr/local/bin, with its libraries (copy_with_libs would also
  # leave a second copy at its host path: 49 MB for proxborg)
  for b in $EXTRA_BIN; do
    copy_with_libs "$R" "$b"; mv "$R$b" "$R/usr/local/bin/"
  done
  [ -n "$WITH_PVE_SIM" ] && add_pve_sim_runtime "$R"
  local pair
  for pair in $EXTRA_DIRS; do mkdir -p "$R${pair#*:}"; cp -a "${pair%%:*}/." "$R${pair#*:}/"; done
  # lxc-usernsexec (pct restore's wrapper for unprivileged CTs) reads subordinate id ranges
  echo "root:100000:65536" > "$R/etc/subuid"; echo "root:100000:65536" > "$R/etc/subgid"
  # glibc dlopen()s libgcc_s for pthread_cancel (zfs send aborts without it)
  mkdir -p "$R/lib/x86_64-linux-gnu"; cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$R/lib/x86_64-linux-gnu/"
  ln -sf /proc/self/mounts "$R/etc/mtab"
  echo "root:x:0:0:root:/root:/bin/sh" > "$R/etc/passwd"; echo "root:x:0:" > "$R/etc/group"
  # kernel modules: spl+zfs from dkms, virtio_blk + 9p from the (extracted) kernel package.
  # Merge both into $WORK/modroot, depmod it, and let modprobe compute the insmod order.
  local MR="$WORK/modroot" mods="" m f
  rm -rf "$MR"; mkdir -p "$MR/lib/modules"
  cp -al "$WORK/kernel/lib/modules/$KVER" "$MR/lib/modules/$KVER"
  mkdir -p "$MR/lib/modules/$KVER/updates/dkms"
  cp "$WORK"/zfs-ko/*.ko* "$MR/lib/modules/$KVER/updates/dkms/"
  depmod -b "$MR" "$KVER"
  for m in virtio_pci virtio_blk 9p 9pnet_virtio spl zfs; do   # virtio_pci is =m on 6.1, =y on 6.12
    mods="$mods $(modprobe -d "$MR" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}')"
  done
  : > "$R/etc/modules.order"
  for f in $mods; do
    grep -qx "$(basename "${f%.xz}")" "$R/etc/modules.order" && continue
    case $f in
      *.xz) xz -dc "$f" > "$R/lib/modules/$KVER/$(basename "${f%.xz}")";;
      *)    cp "$f" "$R/lib/modules/$KVER/";;
    esac
    basename "${f%.xz}" >> "$R/etc/modules.order"
  done
  # default guest test
  cat > "$R/smoke-test.sh" <<'EOS'
#!/bin/sh
set -x
D=/dev/vda1   # whole-disk /dev/vda would make zpool wait for udev to create vda1 (no udev here)
zpool create -f -o ashift=12 -O acltype=posixacl -O xattr=sa -O compression=lz4 labvm $D
zfs create labvm/data
zfs create -o acltype=posixacl -o xattr=sa labvm/data/subvol-100-disk-0
zfs create -V 64M labvm/data/vm-101-disk-0
P=/labvm/data/subvol-100-disk-0
echo hello > $P/f; chown 100033:100033 $P/f; chmod 4755 $P/f
setfacl -m u:100034:rwx $P/f && getfacl -n $P/f
setfattr -n user.lab -v 1 $P/f && getfattr -d $P/f
setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= $P/f && getfattr -m - -d $P/f
ls -l /dev/zd* ; [ -b /dev/zd0 ] && dd if=/dev/urandom of=/dev/zd0 bs=1M count=4 2>&1
zfs snapshot labvm/data/subvol-100-disk-0@s1 labvm/data/vm-101-disk-0@s1
zfs snapshot -r labvm/data@r1
zfs clone -o mountpoint=/mnt/c1 labvm/data/subvol-100-disk-0@s1 labvm/c1 && ls -ln /mnt/c1 && zfs destroy labvm/c1
zfs list -H -p -o name,mountpoint,type,used,refer,guid,createtxg -t all
zfs send labvm/data/subvol-100-disk-0@s1 | wc -c
zfs send -i @s1 labvm/data/subvol-100-disk-0@r1 | wc -c
ls /labvm/data/subvol-100-disk-0/.zfs/snapshot/
zpool status labvm
zpool export labvm
EOS
  chmod +x "$R/smoke-test.sh"
  cat > "$R/init" <<'EOI'
#!/bin/sh
export PATH=/usr/local/bin:/usr/bin:/sbin:/bin:/usr/sbin
# NOTE: Debian's busybox ash prefers its own applets (SH_STANDALONE) regardless of PATH:
# call the copied GNU tools by absolute path (/usr/bin/tar --sparse, /usr/bin/touch -d ...ns)
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm; mount -t tmpfs tmp /tmp
ln -sf /proc/self/fd /dev/fd    # bash's process substitution (pve/sim) opens /dev/fd/N
up() { cut -d' ' -f1 /proc/uptime; }
echo "=== [$(up)s] init: loading modules"
KVER=$(uname -r)
for m in $(cat /etc/modules.order); do insmod /lib/modules/$KVER/$m || echo "insmod $m FAILED"; done
echo "=== [$(up)s] modules loaded: $(cat /sys/module/zfs/version 2>/dev/null)"
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 host0 /mnt/host 2>/dev/null; then
  echo "=== 9p share mounted at /mnt/host"
fi
T=/smoke-test.sh
[ -x /mnt/host/guest-test.sh ] && T=/mnt/host/guest-test.sh
echo "=== [$(up)s] running $T"
S=$(up); sh $T 2>&1; rc=$?
echo "=== [$(up)s] test rc=$rc (test took $(awk -v a=$S -v b=$(up) 'BEGIN{print b-a}')s)"
[ -d /mnt/host ] && echo $rc > /mnt/host/guest-rc 2>/dev/null
sync; umount /mnt/host 2>/dev/null
echo "=== [$(up)s] powering off"
poweroff -f
echo o > /proc/sysrq-trigger
EOI
  chmod +x "$R/init"
  (cd "$R" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$WORK/initrd.img"
  log "initrd: $(du -h "$WORK/initrd.img" | cut -f1), modules: $(tr '\n' ' ' < "$R/etc/modules.order")"
}

# ---------------------------------------------------------------- run
do_run() {
  local kernel="$WORK/kernel/boot/vmlinuz-$KVER"
  [ -e "$kernel" ] || kernel=/boot/vmlinuz-$KVER
  mkdir -p "$WORK/share"; rm -f "$WORK/share/guest-rc"
  if [ -n "${1:-}" ]; then cp "$1" "$WORK/share/guest-test.sh"; chmod +x "$WORK/share/guest-test.sh"; else rm -f "$WORK/share/guest-test.sh"; fi
  rm -f "$WORK/disk.img"; truncate -s "$DISK_SIZE" "$WORK/disk.img"
  # partitions, not the whole disk: the guest sees /dev/vda1.. via devtmpfs (no udev to wait for)
  local part_mib=$(( $(stat -c %s "$WORK/disk.img") / 1048576 / PARTS - 1 )) i
  { echo 'label: gpt'; for i in $(seq 1 "$PARTS"); do echo ",${part_mib}M"; done; } | sfdisk -q "$WORK/disk.img"
  timeout "$VM_TIMEOUT" qemu-system-x86_64 -accel "$ACCEL" -cpu max -smp "$SMP" -m "$MEM" \
    -nographic -no-reboot -nodefaults -serial stdio \
    -kernel "$kernel" -initrd "$WORK/initrd.img" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init" \
    -drive file="$WORK/disk.img",format=raw,if=virtio,cache=unsafe \
    -virtfs local,path="$WORK/share",mount_tag=host0,security_model=none,id=host0 \
    | tee "$WORK/console.log"
  local rc; rc=$(cat "$WORK/share/guest-rc" 2>/dev/null || echo missing)
  log "guest test rc=$rc"
  [ "$rc" = 0 ]
}

case ${1:-} in
  setup)  timed do_setup ;;
  build)  timed do_build ;;
  initrd) timed do_initrd ;;
  run)    shift; timed do_run "${1:-}" ;;
  all)    timed do_setup; timed do_build; timed do_initrd; timed do_run ;;
  *) sed -n '2,35p' "$0"; exit 2 ;;
esac
