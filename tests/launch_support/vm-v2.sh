#!/usr/bin/env bash
# Runs the privileged launch tests on cgroup v2 (unified): a stock Debian 6.1 cloud
# kernel under qemu TCG, the built test binary and agent in an initramfs.
#
#   apt-get download linux-image-6.1.0-*-cloud-amd64 && dpkg -x linux-image-*.deb KDIR
#   cargo test --test privileged_launch --no-run   # prints the test binary's path
#   tests/launch_support/vm-v2.sh KDIR target/debug/deps/privileged_launch-HASH \
#       "$PWD/target/debug/agent" [TEST FILTER]
#
# Needs qemu-system-x86 and cpio. Both binaries must be absolute paths (the test binary
# has the agent's path compiled in, and the initramfs keeps the same paths).
set -euo pipefail
kdir=$1 test_bin=$2 agent_bin=$3 filter=${4:-}
kver=$(ls "$kdir/lib/modules")
work=$(mktemp -d /tmp/agent-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,etc,lib64,lib/x86_64-linux-gnu,run}
cp /bin/busybox "$root/bin/busybox"
for a in $(/bin/busybox --list | grep -vx busybox); do ln -sf busybox "$root/bin/$a" 2>/dev/null || true; done
cp "$kdir/lib/modules/$kver/kernel/fs/overlayfs/overlay.ko" "$root/overlay.ko"
# The binaries at the same absolute paths (the test binary has the agent's path baked in).
for b in "$test_bin" "$agent_bin"; do
  mkdir -p "$root$(dirname "$b")"
  cp "$b" "$root$b"
  for lib in $(ldd "$b" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
  done
done
# pivot_root(2) refuses to move the initramfs root, so stage one copies the
# initramfs onto a tmpfs and switch_roots into it, as a real boot would.
cat > "$root/init" <<'INIT'
#!/bin/sh
mount -t devtmpfs devtmpfs /dev
mkdir -p /newroot
mount -t tmpfs -o size=1500m tmpfs /newroot
for d in /*; do
  case "$d" in /newroot|/dev|/proc|/sys) mkdir -p "/newroot$d" ;; *) cp -a "$d" /newroot/ ;; esac
done
umount /dev
exec switch_root /newroot /init2
INIT
cat > "$root/init2" <<INIT
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /tmp && mount -t tmpfs -o size=1g tmpfs /tmp
insmod /overlay.ko
echo "VM: kernel \$(uname -r), cgroup controllers: \$(cat /sys/fs/cgroup/cgroup.controllers)"
cd /tmp
HOME=/tmp RUST_BACKTRACE=1 $test_bin --test-threads=2 $filter 2>&1
echo "VM-EXIT: \$?"
poweroff -f
INIT
chmod +x "$root/init2"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$work/initrd"
timeout 900 qemu-system-x86_64 -accel tcg -m 2048 -smp 2 -nographic -no-reboot \
  -kernel "$kdir/boot/vmlinuz-$kver" -initrd "$work/initrd" \
  -append "console=ttyS0 quiet panic=-1 rdinit=/init" </dev/null
