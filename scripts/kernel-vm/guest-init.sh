#!/bin/sh
# PID 1 of the kernel-matrix guest (scripts/test-kernel.sh), started by the initramfs with the
# host's root filesystem mounted read-only (virtiofs) as /. Makes what must be writable (tmpfs on
# /tmp, /run, /var/tmp, /mnt), points the kernel's module loader at the unpacked package's modules
# (a modprobe wrapper in /proc/sys/kernel/modprobe: the host's /lib/modules is not ours), mounts bpffs and
# cgroup2, lays a writable copy of the checkout over its own path (an overlay with a tmpfs upper
# layer; a plain copy if overlayfs is unusable), runs the job script, and reports its exit code on
# the console as a marker line "SKL-VM-EXIT=N" before powering off.
# Arguments come from the kernel command line: skl.src (checkout), skl.work (run directory holding
# job.sh), skl.kroot (the unpacked kernel package: lib/modules/VERSION with modules.dep).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp LANG=C.UTF-8 TERM=dumb
say() { echo "skl-vm: $*"; }
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "${w#*=}" ;; esac; done; }
finish() {
  echo "SKL-VM-EXIT=$1"
  sync
  echo o >/proc/sysrq-trigger
  # wait for the power-off with shell builtins only: the shared root may already be gone (9p)
  while :; do read -r _ </dev/console; done
}
src=$(arg skl.src)
work=$(arg skl.work)
kroot=$(arg skl.kroot)
kver=$(uname -r)

# Paths on the share first (they may lie below /tmp, which a tmpfs is about to hide).
mount -t tmpfs -o mode=755 tmpfs /mnt || finish 125
mkdir -p /mnt/src /mnt/work /mnt/kroot
mount --bind "$src" /mnt/src && mount --bind "$work" /mnt/work && mount --bind "$kroot" /mnt/kroot || finish 125
printf '#!/bin/sh\nexec modprobe -d /mnt/kroot "$@"\n' >/mnt/modprobe && chmod 755 /mnt/modprobe
echo /mnt/modprobe >/proc/sys/kernel/modprobe
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /dev/shm /dev/pts /run/netns && mount -t tmpfs tmpfs /dev/shm && mount -t devpts devpts /dev/pts
hostname skl-vm
ip link set lo up

# A writable checkout at its own path.
mkdir -p /tmp/.skl-upper /tmp/.skl-ovl "$src" 2>/dev/null
if ! { /mnt/modprobe overlay && mount -t overlay overlay -o "lowerdir=/mnt/src,upperdir=/tmp/.skl-upper,workdir=/tmp/.skl-ovl" "$src"; }; then
  say "overlayfs unusable: copying the checkout to a tmpfs"
  mount -t tmpfs tmpfs "$src" && cp -a /mnt/src/. "$src" || finish 125
fi
cd "$src" || finish 125
say "Linux $kver, $(nproc) CPUs, $(awk '/MemTotal/ {print int($2/1024) " MiB"}' /proc/meminfo); running $work/job.sh"
sh /mnt/work/job.sh
finish $?
