#!/usr/bin/env bash
# npm run test:kernel — the kernel matrix: boot Debian 12's LTS kernel (linux-image-6.1.0-*-amd64-unsigned)
# under QEMU (TCG: no KVM needed) with this machine's root filesystem shared read-only (virtiofs;
# 9p when virtiofsd is unusable), and run the kernel smoke inside it (scripts/smoke.ts: skl doctor,
# attach/serve/detach over IPv4 and IPv6, UDP, a prefix binding, xdp-count over a veth, following a
# service across restarts, upgrades from skl 0.1.0's and skl 0.3.0's state) and doctor's own tests (test/doctor.test.ts: every probe agrees with the kernel),
# in network namespaces of the guest. The guest has no network device at all.
#
#   npm run test:kernel                       # the newest 6.1 kernel apt knows
#   npm run test:kernel -- --kernel linux-image-6.1.0-57-amd64-unsigned
#   npm run test:kernel -- --cmd 'node bin/run.js doctor'   # any command, run in the checkout
#
# Nothing is installed on the host for the kernel: the .deb is fetched with `apt-get download` and
# unpacked with `dpkg-deb -x` into /var/cache/skl/kernel/<package>/ (kept between
# runs, with the initramfs built from it). The tools come from Debian's apt when missing (as root):
# qemu-system-x86, qemu-system-common (virtiofsd), kmod, cpio, busybox-static.
# Exit code: the command's in the guest; 124 when the VM hit the time limit; 125 when the VM could not
# run the command at all. Everything the run makes (virtiofsd, QEMU, the run directory) is removed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

kernel_pkg=${SKL_KERNEL_PKG:-}
cmd=''
timeout_s=${SKL_VM_TIMEOUT:-1200}
mem=${SKL_VM_MEM:-3072}
share=${SKL_VM_SHARE:-virtiofs}
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel_pkg=$2; shift 2 ;;
    --cmd) cmd=$2; shift 2 ;;
    --9p) share=9p; shift ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test-kernel: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { echo "test-kernel: $*" >&2; }
started=$(date +%s)

# --- tools ---
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
virtiofsd=/usr/lib/qemu/virtiofsd
missing=()
have qemu-system-x86_64 || missing+=(qemu-system-x86)
[ -x "$virtiofsd" ] || missing+=(qemu-system-common)
have depmod || missing+=(kmod)
have cpio || missing+=(cpio)
# the initramfs needs a static busybox (the busybox package's is dynamic)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing: ${missing[*]} (install them with: sudo apt-get install --no-install-recommends ${missing[*]})"
    exit 2
  fi
  log "installing ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
  log "run as root: virtiofsd shares the root filesystem and the smoke loads BPF programs"
  exit 2
fi

# --- the kernel: newest linux-image-6.1.0-N-amd64-unsigned apt knows, downloaded and unpacked once ---
# root's cache is /var/cache/skl (as for scripts/test-node.sh)
if [ -n "${SKL_CACHE_DIR:-}" ]; then cache=$SKL_CACHE_DIR/kernel
elif [ "$(id -u)" = 0 ]; then cache=/var/cache/skl/kernel
else cache=${XDG_CACHE_HOME:-$HOME/.cache}/skl/kernel; fi
mkdir -p "$cache"
newest() { apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -1; }
if [ -z "$kernel_pkg" ]; then
  kernel_pkg=$(newest)
  if [ -z "$kernel_pkg" ]; then
    apt-get update -qq >/dev/null
    kernel_pkg=$(newest)
  fi
  [ -n "$kernel_pkg" ] || { log "apt knows no linux-image-6.1.0-*-amd64-unsigned (is this Debian 12 with bookworm in sources.list?)"; exit 2; }
fi
kdir=$cache/$kernel_pkg
# one preparer at a time (another checkout's run may share the cache); released once the initramfs is built
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$kdir/.unpacked" ]; then
  log "fetching $kernel_pkg (apt-get download; unpacked into $kdir, nothing installed)"
  rm -rf "$kdir"
  mkdir -p "$kdir"
  (cd "$kdir" && apt-get download -q "$kernel_pkg" 2>&1 | grep -v 'unsandboxed' >&2 || true)
  deb=$(find "$kdir" -maxdepth 1 -name '*.deb' | head -1)
  [ -n "$deb" ] || { log "apt-get download $kernel_pkg failed"; exit 1; }
  dpkg-deb -x "$deb" "$kdir/root"
  rm -f "$deb"
  kver=$(ls "$kdir/root/lib/modules" | head -1)
  depmod -b "$kdir/root" "$kver"
  touch "$kdir/.unpacked"
  # a newer package replaces the ones cached before (≈400 MB each)
  for other in "$cache"/linux-image-*; do
    [ "$other" = "$kdir" ] || [ ! -f "$other/.unpacked" ] || rm -rf "$other"
  done
fi
kver=$(ls "$kdir/root/lib/modules" | head -1)
vmlinuz=$kdir/root/boot/vmlinuz-$kver

# --- the initramfs: static busybox, the virtio/virtiofs/9p modules, scripts/kernel-vm/initramfs-init ---
# named after its /init, so that a changed one is rebuilt and every checkout finds its own
initrd=$kdir/initrd-$(sha256sum scripts/kernel-vm/initramfs-init | cut -c1-12).cpio.gz
if [ ! -f "$initrd" ]; then
  stage=$(mktemp -d)
  mkdir -p "$stage/bin" "$stage/modules"
  cp /bin/busybox "$stage/bin/busybox"
  cp scripts/kernel-vm/initramfs-init "$stage/init"
  chmod 755 "$stage/init"
  : >"$stage/modules.load"
  for m in virtio_pci virtiofs 9pnet_virtio 9p; do
    modprobe -d "$kdir/root" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
  done | awk '!seen[$0]++' | while read -r ko; do
    cp "$ko" "$stage/modules/"
    basename "$ko" >>"$stage/modules.load"
  done
  (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1 >"$initrd.tmp")
  mv "$initrd.tmp" "$initrd"
  rm -rf "$stage"
fi
flock -u 9
exec 9>&-

# --- this checkout, built; skl 0.1.0 and 0.3.0 for the upgrade steps ---
bash scripts/setup.sh
run=$(mktemp -d "$cache/run.XXXXXX")
vfsd_pid=''
qemu_pid=''
tail_pid=''
cleanup() {
  for p in $tail_pid $qemu_pid $vfsd_pid; do kill "$p" 2>/dev/null || true; done
  for p in $qemu_pid $vfsd_pid; do wait "$p" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

default_job=false
if [ -z "$cmd" ]; then
  default_job=true
  # both at once (each is a TypeScript build of its own)
  bash scripts/old-skl.sh "$run/old" >/dev/null &
  old010=$!
  bash scripts/old-skl.sh "$run/old030" v0.3.0 >/dev/null &
  old030=$!
  wait "$old010"
  wait "$old030"
  # the smoke, then doctor's own tests (its probes against this kernel); CI=true: nothing may skip.
  # ava's inactivity timeout (120 s in package.json) is for the host: under TCG, with the host's
  # cores busy, the file's concurrent `skl doctor` runs went 120 s without one finishing (each
  # takes ≈25 s alone there), and ava gave up on tests that were running fine
  cmd="rc=0; node dist/scripts/smoke.js --old-skl /mnt/work/old/bin/run.js --old-skl-0.3.0 /mnt/work/old030/bin/run.js || rc=1; CI=true node scripts/run-tests.js --timeout=10m dist/test/doctor.test.js || rc=1; exit \$rc"
fi
printf '%s\n' "$cmd" >"$run/job.sh"

# --- share the root filesystem (read-only in the guest) ---
sock=$run/vfsd.sock
if [ "$share" = virtiofs ]; then
  # sandbox=chroot: the default (namespace) pivot_roots into the shared directory, which fails for
  # source=/ ("pivot_root(., .): Device or resource busy")
  "$virtiofsd" --socket-path="$sock" -o source=/ -o cache=always -o sandbox=chroot -o log_level=err >"$run/virtiofsd.log" 2>&1 &
  vfsd_pid=$!
  for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
  if [ ! -S "$sock" ]; then
    log "virtiofsd did not start ($(tr '\n' ' ' <"$run/virtiofsd.log")); falling back to 9p (slower)"
    kill "$vfsd_pid" 2>/dev/null || true
    vfsd_pid=''
    share=9p
  fi
fi
if [ "$share" = virtiofs ]; then
  share_args=(-object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -numa node,memdev=mem
    -chardev "socket,id=vfs,path=$sock" -device vhost-user-fs-pci,queue-size=1024,chardev=vfs,tag=hostroot)
else
  share_args=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
fi

# --- boot ---
console=$run/console.log
: >"$console"
append="console=ttyS0 quiet loglevel=3 panic=1 skl.share=$share skl.guest=$root/scripts/kernel-vm/guest-init.sh skl.src=$root skl.work=$run skl.kroot=$kdir/root"
log "booting Linux $kver under QEMU TCG ($(nproc) CPUs, ${mem} MiB, root shared over $share); job: $cmd"
boot=$(date +%s)
# no network device (-nic none); the console goes to a file, followed here
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp "$(nproc)" -m "${mem}M" \
  "${share_args[@]}" -kernel "$vmlinuz" -initrd "$initrd" -append "$append" \
  -nic none -display none -monitor none -serial "file:$console" -no-reboot &
qemu_pid=$!
tail -n +1 -f "$console" &
tail_pid=$!
rc=0
wait "$qemu_pid" || rc=$?
qemu_pid=''
sleep 0.5
kill "$tail_pid" 2>/dev/null || true
wait "$tail_pid" 2>/dev/null || true
tail_pid=''

end=$(date +%s)
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  log "the VM did not finish within ${timeout_s} s: stopped"
  exit 124
fi
marker=$(tr -d '\r' <"$console" | sed -n 's/^SKL-VM-EXIT=\([0-9]*\)$/\1/p' | tail -1)
if [ -z "$marker" ]; then
  log "the guest reported no exit code (QEMU exit $rc); the console is above"
  exit 125
fi
log "Linux $kver: exit $marker; VM ran $((end - boot)) s, $((end - started)) s wall in all"
# the run of the default job, for the matrix in BENCHMARKS.md (npm run bench reads it)
if [ "$default_job" = true ]; then
  counts=$(tr -d '\r' <"$console" | grep -E '^[0-9]+ passed, [0-9]+ failed$' || true)
  mkdir -p "$(dirname "$cache")/matrix"
  node -e '
    const [file, kernel, exit, vm, wall, smoke, doctor] = process.argv.slice(1);
    require("node:fs").writeFileSync(file, JSON.stringify({kernel, exit: Number(exit), vmSeconds: Number(vm), wallSeconds: Number(wall), smoke, doctor, date: new Date().toISOString(), hostCpus: require("node:os").cpus().length}) + "\n");' \
    "$(dirname "$cache")/matrix/kernel-$kver.json" "$kver" "$marker" "$((end - boot))" "$((end - started))" \
    "$(echo "$counts" | sed -n 1p)" "$(echo "$counts" | sed -n 2p)" || log "could not record the run for the matrix"
fi
exit "$marker"
