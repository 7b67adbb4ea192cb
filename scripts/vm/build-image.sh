#!/usr/bin/env bash
# Builds the VM that proves ipvs mode (the development and CI kernel has no IPVS): an uncompressed
# kernel for PVH direct boot and an initramfs with busybox, the kernel tools, the modules of
# modules.list, Node.js, the compiled project and the in-guest scenarios (test/vm/guest/).
#
# Everything comes from Debian packages (`apt-get download` + `dpkg-deb -x`, never installed),
# except Node.js, which is the host's own binary. Downloads and extractions are cached, keyed by
# package version, in $KPT_VM_CACHE (default /var/cache/kube-proxy-ts/vm as root, else
# ${XDG_CACHE_HOME:-~/.cache}/kube-proxy-ts/vm); the initramfs is rebuilt when its content key
# (package versions, node, project build, guest code, this folder) changes.
#
# Prints `vmlinux=PATH` and `initrd=PATH` on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

if [ -n "${KPT_VM_CACHE:-}" ]; then
  cache=$KPT_VM_CACHE
elif [ "$(id -u)" = 0 ]; then
  cache=/var/cache/kube-proxy-ts/vm
else
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/kube-proxy-ts/vm
fi
mkdir -p "$cache/debs" "$cache/extract" "$cache/image"
log() { echo "vm-image: $*" >&2; }
die() { log "$*"; exit 1; }

for tool in apt-get apt-cache dpkg-deb lz4 zstd xz gzip ldd ldconfig sha256sum od; do
  command -v "$tool" >/dev/null || die "needs $tool on the host"
done

# Candidate versions of packages, as NAME=VERSION lines (one apt-cache call: it is slow).
candidates() { apt-cache show --no-all-versions "$@" 2>/dev/null | awk '$1 == "Package:" { p = $2 } $1 == "Version:" { print p "=" $2 }'; }
if [ -z "$(candidates busybox-static)" ]; then
  [ "$(id -u)" = 0 ] || die "apt has no package lists; run apt-get update as root"
  log "apt-get update"
  apt-get update -qq
fi

kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
[ -n "$kernel_pkg" ] || die "apt-cache depends linux-image-cloud-amd64 names no kernel package"
kver=${kernel_pkg#linux-image-}

# The tools, and the shared libraries they depend on directly (two levels: libbpf1 → libelf1 →
# zlib1g). libc6 and libgcc-s1 come with the host's node binary below.
tools=(busybox-static ipvsadm ipset iptables iproute2 conntrack)
lib_deps() {
  apt-cache depends "$@" | awk '$1 == "Depends:" && ($2 ~ /^lib/ || $2 == "zlib1g") && $2 !~ /^(libc6|libgcc-s1|libstdc\+\+6)$/ { print $2 }'
}
mapfile -t level1 < <(lib_deps "${tools[@]}" | sort -u)
mapfile -t pkgs < <({ printf '%s\n' "${tools[@]}" "${level1[@]}"; lib_deps "${level1[@]}"; } | awk '!seen[$0]++')

# Download (one apt-get call for what is missing) and extract each package once per version.
versions=$(candidates "$kernel_pkg" "${pkgs[@]}" | sort -u)
declare -A version_of=() dir_of=()
while IFS='=' read -r p v; do version_of[$p]=$v; done <<<"$versions"
missing=()
for p in "$kernel_pkg" "${pkgs[@]}"; do
  v=${version_of[$p]:-}
  [ -n "$v" ] || die "no candidate version for $p"
  dir_of[$p]="$cache/extract/${p}_${v//:/%3a}"
  [ -d "${dir_of[$p]}" ] || compgen -G "$cache/debs/${p}_${v//:/%3a}_*.deb" >/dev/null || missing+=("$p=$v")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get download ${missing[*]}"
  (cd "$cache/debs" && apt-get download -qq -o APT::Sandbox::User=root "${missing[@]}")
fi
for p in "$kernel_pkg" "${pkgs[@]}"; do
  dest=${dir_of[$p]}
  [ -d "$dest" ] && continue
  v=${version_of[$p]}
  deb=$(compgen -G "$cache/debs/${p}_${v//:/%3a}_*.deb" | head -1 || true)
  [ -n "$deb" ] || die "apt-get download $p=$v left no .deb"
  rm -rf "$dest.partial"
  dpkg-deb -x "$deb" "$dest.partial"
  mv "$dest.partial" "$dest"
done
kdir=${dir_of[$kernel_pkg]}
busybox=${dir_of[busybox-static]}/bin/busybox
[ -x "$busybox" ] || die "busybox-static ships no bin/busybox"

# The uncompressed kernel: the payload of the bzImage (setup header fields payload_offset and
# payload_length, whose last 4 bytes are the uncompressed size), decompressed by its magic.
if [ ! -f "$kdir/vmlinux" ]; then
  vmlinuz="$kdir/boot/vmlinuz-$kver"
  field() { od -An -t "u$2" -j "$1" -N "$2" "$vmlinuz" | tr -d ' '; }
  setup_sects=$(field $((0x1f1)) 1)
  [ "$setup_sects" != 0 ] || setup_sects=4
  start=$(((setup_sects + 1) * 512 + $(field $((0x248)) 4)))
  length=$(field $((0x24c)) 4)
  magic=$(od -An -t x1 -j "$start" -N 4 "$vmlinuz" | tr -d ' ')
  case $magic in
  02214c18) decompress=(lz4 -dc) ;;
  28b52ffd) decompress=(zstd -dc) ;;
  fd377a58) decompress=(xz -dc) ;;
  1f8b08*) decompress=(gzip -dc) ;;
  *) die "$vmlinuz: unknown payload compression (magic $magic)" ;;
  esac
  tail -c +$((start + 1)) "$vmlinuz" >"$kdir/payload"
  truncate -s $((length - 4)) "$kdir/payload"
  "${decompress[@]}" "$kdir/payload" >"$kdir/vmlinux.partial"
  rm "$kdir/payload"
  [ "$(od -An -t x1 -N 4 "$kdir/vmlinux.partial" | tr -d ' ')" = 7f454c46 ] || die "$vmlinuz: the payload is not an ELF kernel"
  mv "$kdir/vmlinux.partial" "$kdir/vmlinux"
fi
moddir="$kdir/lib/modules/$kver"
[ -f "$moddir/modules.dep" ] || "$busybox" depmod -b "$kdir" "$kver"

# The content key of the initramfs.
"$root/scripts/ensure-build.sh"
node_bin=$(readlink -f "$(command -v node)")
key=$(
  {
    echo "$versions"
    sha256sum "$node_bin"
    find "$here" test/vm/guest bench/lab bench/synthetic.ts dist examples -type f -print0 | sort -z | xargs -0 sha256sum
    sha256sum package-lock.json package.json bin/kube-proxy-ts.js
  } | sha256sum | cut -c1-16
)
initrd="$cache/image/initrd-$key.cpio.zst"
if [ -f "$initrd" ]; then
  log "initramfs up to date ($initrd)"
  echo "vmlinux=$kdir/vmlinux"
  echo "initrd=$initrd"
  exit 0
fi

stage=$(mktemp -d "$cache/image/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
log "staging the initramfs in $stage"
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,etc,proc,sys,dev,tmp,run,var,opt/kpt}
ln -s ../run "$stage/var/run"

# Tools from their packages (documentation dropped), then busybox applets for what is left.
for p in "${pkgs[@]}"; do
  cp -a "${dir_of[$p]}/." "$stage/"
done
rm -rf "$stage/usr/share" "$stage/etc/init.d" "$stage/etc/logrotate.d"
for applet in $("$busybox" --list); do
  for d in bin sbin usr/bin usr/sbin; do
    [ -e "$stage/$d/$applet" ] && continue 2
  done
  ln -s busybox "$stage/bin/$applet"
done
# Debian picks iptables' variant with update-alternatives; the guest uses iptables-nft as the host does.
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  [ -e "$stage/usr/sbin/$t" ] || ln -s xtables-nft-multi "$stage/usr/sbin/$t"
done
printf 'tcp 6 TCP\nudp 17 UDP\nicmp 1 ICMP\n' >"$stage/etc/protocols"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
printf 'root:x:0:\n' >"$stage/etc/group"

# Node.js and the compiled project with its production dependencies.
cp "$node_bin" "$stage/usr/bin/node"
cp -r dist bin examples package.json "$stage/opt/kpt/"
mapfile -t prod < <(npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2)
for p in "${prod[@]}"; do
  rel=${p#"$root"/}
  case $rel in
  node_modules/@*/*/node_modules/* | node_modules/[!@]*/node_modules/*) ;; # inside a package copied whole
  node_modules/*)
    mkdir -p "$stage/opt/kpt/$(dirname "$rel")"
    [ -e "$stage/opt/kpt/$rel" ] || cp -r "$p" "$stage/opt/kpt/$rel"
    ;;
  esac
done
node_modules/.bin/tsc -p test/vm/guest/tsconfig.json --outDir "$stage/opt/kpt/test-vm"
# The scale lab's traffic agent and manifests (bench/lab/), which the guest's datapath.ts runs.
node_modules/.bin/tsc -p bench/lab/tsconfig.json --outDir "$stage/opt/kpt/bench-lab"
cp "$here/init.sh" "$stage/init"
chmod 755 "$stage/init"

# Shared libraries: every ELF's needs, from the staged packages first, else from the host.
printf '/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' >"$stage/etc/ld.so.conf"
libpath="$stage/lib/x86_64-linux-gnu:$stage/usr/lib/x86_64-linux-gnu"
# One ldd call over every program and library (ldd takes many files; scripts it skips).
mapfile -t elves < <(find "$stage/bin" "$stage/sbin" "$stage/usr/bin" "$stage/usr/sbin" "$stage/lib" "$stage/usr/lib" \
  -type f \( -perm -u+x -o -name '*.so*' \) ! -name '*.ko')
{ LD_LIBRARY_PATH=$libpath ldd "${elves[@]}" 2>/dev/null || true; } \
  | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' \
  | sort -u | while read -r lib; do
  case $lib in "$stage"/*) continue ;; esac
  dest="$stage/lib/x86_64-linux-gnu/$(basename "$lib")"
  [ -e "$dest" ] || cp -L "$lib" "$dest"
done
ln -sf ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$stage/lib64/ld-linux-x86-64.so.2"
ldconfig -r "$stage"

# Modules with their dependencies, and a modules.dep of their own.
mapfile -t wanted < <(grep -v -e '^#' -e '^$' "$here/modules.list")
: >"$stage/etc/modules.order"
for m in "${wanted[@]}"; do
  line=$(grep -E "(^|/)${m}\.ko:" "$moddir/modules.dep" || true)
  [ -n "$line" ] || die "module $m is not in $kernel_pkg"
  for f in $(echo "$line" | tr -d ':' | awk '{ for (i = NF; i >= 1; i--) print $i }'); do
    mkdir -p "$stage/lib/modules/$kver/$(dirname "$f")"
    cp -n "$moddir/$f" "$stage/lib/modules/$kver/$f"
  done
  echo "$m" >>"$stage/etc/modules.order"
done
cp "$moddir/modules.builtin" "$moddir/modules.order" "$stage/lib/modules/$kver/"
"$busybox" depmod -b "$stage" "$kver"

log "packing $(du -sh "$stage" | cut -f1) into $initrd"
rm -f "$cache"/image/initrd-*.cpio.zst
(cd "$stage" && find . -mindepth 1 | sort | "$busybox" cpio -o -H newc 2>/dev/null) | zstd -q -T0 -3 -o "$initrd.partial"
mv "$initrd.partial" "$initrd"
echo "vmlinux=$kdir/vmlinux"
echo "initrd=$initrd"
