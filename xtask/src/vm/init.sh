#!/bin/busybox sh
# The guest's /init, from xtask/src/vm/init.sh (initramfs.rs fills in the
# @…@ words). It mounts the host's root read-only over 9p, prepares it like
# a booted system, runs /run/procespy-vm/command.sh there as root, records
# the result in the writable share, and powers off.

/bin/busybox --install -s /bin
export PATH=/bin

say() { echo "procespy-init: $*"; }
fail() {
    say "FAILED: $*"
    poweroff -f
    echo o > /proc/sysrq-trigger
    exit 1
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
for module in @MODULES@; do
    insmod "/modules/$module" || fail "insmod $module"
done

new=/newroot
share=$new/run/procespy-vm
p9=trans=virtio,version=9p2000.L,msize=262144
# cache=loose: the guest keeps what it read of the host's files (the host
# does not change them during a run); executables start 2-4 times faster.
mount -t 9p -o "ro,$p9,cache=loose" hostroot $new || fail "mount the host's root (9p tag hostroot)"
mount -t proc proc $new/proc || fail "mount /proc in the host's root"
mount -t sysfs sysfs $new/sys || fail "mount /sys in the host's root"
mount -t devtmpfs devtmpfs $new/dev || fail "mount /dev in the host's root"
mkdir -p $new/dev/pts $new/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $new/dev/pts || fail "mount devpts"
mount -t tmpfs -o mode=1777 tmpfs $new/dev/shm || fail "mount /dev/shm"
mount -t tracefs tracefs $new/sys/kernel/tracing || fail "mount tracefs"
mount -t bpf bpf $new/sys/fs/bpf || fail "mount bpffs"
mount -t cgroup2 cgroup2 $new/sys/fs/cgroup || fail "mount cgroup2"
for dir in tmp var/tmp; do
    mount -t tmpfs -o mode=1777 tmpfs $new/$dir || fail "mount tmpfs on /$dir"
done
mount -t tmpfs -o mode=755 tmpfs $new/run || fail "mount tmpfs on /run"
# The guest kernel's own modules, for modprobe inside the guest (a host
# without /lib/modules, such as a container, has no place for them).
if [ -d $new/lib/modules ]; then
    mount -t tmpfs -o mode=755 tmpfs $new/lib/modules || fail "mount tmpfs on /lib/modules"
    mkdir $new/lib/modules/@RELEASE@
    mount -o bind $new@MODULES_DIR@ $new/lib/modules/@RELEASE@ || fail "bind the kernel's modules"
else
    say "the host has no /lib/modules: modprobe will find no module"
fi
mkdir $share
mount -t 9p -o "$p9" results $share || fail "mount the results share (9p tag results)"

hostname procespy-vm
ip link set lo up || fail "set up lo"
uname -r > $share/uname
cut -d' ' -f1 /proc/uptime > $share/ready
say "running the command"
chroot $new /bin/sh /run/procespy-vm/command.sh > $share/output 2>&1 < /dev/null
echo $? > $share/exit-code
sync
say "done"
poweroff -f
echo o > /proc/sysrq-trigger
