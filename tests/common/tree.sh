#!/bin/bash
# Builds a tree with every kind of entry proxborg must keep, under $1, owned from id base $2
# (0 for a host tree, 100000 for an unprivileged container's files as the host sees them).
# With a third argument "nodevices", no device nodes outside ./dev (an unprivileged container
# cannot have any, and tar inside its user namespace cannot create them).
# Needs a filesystem with POSIX ACLs, user xattrs and file capabilities (tmpfs has them).
set -euo pipefail
root=$1 base=${2:-0} devices=${3:-devices}
mkdir -p "$root"
cd "$root"
id() { echo $((base + $1)); }

mkdir -p etc/vzdump usr/bin var/www/html "dir with spaces" srv/deep dev tmp
echo "hostname: tank" > etc/hostname
printf 'arch: amd64\nhostname: tank\n' > etc/vzdump/pct.conf
head -c 3000000 /dev/urandom > usr/bin/big
head -c 10 /dev/urandom > usr/bin/small
: > usr/bin/empty
cp usr/bin/big usr/bin/big-copy            # same content: deduplicated
echo "<h1>hi</h1>" > var/www/html/index.html
chown -R "$(id 33):$(id 33)" var/www
chmod 2775 var/www/html
chmod 4755 usr/bin/small
chmod 1777 tmp
echo secret > "dir with spaces/file with spaces"
printf 'x' > "$(printf 'new\nline')"
printf 'y' > "$(printf 'latin1-\xe9')"
ln usr/bin/big usr/bin/big-hardlink
ln "dir with spaces/file with spaces" "dir with spaces/second name"
ln -s ../usr/bin/big etc/link-to-big
ln -s "$(printf 'odd target\twith tab and \xff byte')" etc/odd-link
ln -s /nonexistent/absolute etc/dangling
mkfifo srv/fifo
mknod dev/null-copy c 1 3
[ "$devices" = nodevices ] || mknod srv/blockdev b 7 0
# ACLs naming a container user, access and default.
setfacl -m "u:$(id 33):rx,g:$(id 33):r" var/www/html/index.html
setfacl -m "u:$(id 33):rwx" -d -m "u:$(id 33):rx,g::rx" var/www/html
# user xattrs, one binary; a file capability.
setfattr -n user.comment -v "hello" usr/bin/small
setfattr -n user.bin -v 0x00ff10fe usr/bin/big
cp /bin/true usr/bin/ping
setcap cap_net_raw+ep usr/bin/ping
# A sparse file: data at both ends of 2 GiB.
printf 'START' > srv/sparse
truncate -s 2G srv/sparse
printf 'END' | dd of=srv/sparse bs=1 seek=$((2 * 1024 * 1024 * 1024 - 3)) conv=notrunc status=none
# A path over 300 bytes and one of 4 KiB.
long=srv/deep/$(printf 'a%.0s' $(seq 120))/$(printf 'b%.0s' $(seq 120))/$(printf 'c%.0s' $(seq 100))
mkdir -p "$(dirname "$long")"; echo long > "$long"
p=srv/deep
for i in $(seq 16); do p=$p/$(printf "d$i-%.0s" $(seq 60) | cut -c1-250); done
mkdir -p "$p"; echo deepest > "$p/leaf"
# Owners for everything not set above: container root.
find . -xdev ! -path './var/www*' -exec chown -h "$(id 0):$(id 0)" {} +
chown "$(id 1000):$(id 1000)" "dir with spaces/file with spaces"
# chown dropped the capability and setuid bit: set them again. In a container's tree the
# capability is set from inside, so the kernel stores it as v3 with the container's root id.
if [ "$base" = 0 ]; then
    setcap cap_net_raw+ep usr/bin/ping
else
    lxc-usernsexec -m "u:0:$base:65536" -m "g:0:$base:65536" -- setcap cap_net_raw+ep usr/bin/ping
fi
chmod 4755 usr/bin/small
touch -h -d '2001-02-03 04:05:06.123456789' etc/hostname etc/link-to-big
