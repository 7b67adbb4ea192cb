#!/usr/bin/env bash
# Installs what kube-proxy-ts needs on a Debian machine, only what is missing:
# the kernel tools (as root, via apt) and the npm dependencies (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have iptables-restore || need_pkgs+=(iptables)
have nft || need_pkgs+=(nftables)
have ip || need_pkgs+=(iproute2)
have conntrack || need_pkgs+=(conntrack)
have nfacct || need_pkgs+=(nfacct)
# ipvs mode drives IPVS and ipsets through their tools (docs/ipvs-mode.md §2).
have ipset || need_pkgs+=(ipset)
have ipvsadm || need_pkgs+=(ipvsadm)
have openssl || need_pkgs+=(openssl)
have kubectl || need_pkgs+=(kubernetes-client)
if [ "${KPT_WITH_BROWSER:-0}" = 1 ]; then
  have chromium || need_pkgs+=(chromium)
fi
have node || need_pkgs+=(nodejs npm)
# The ipvs suite's VM (scripts/vm/build-image.sh): this kernel has no IPVS.
have qemu-system-x86_64 || need_pkgs+=(qemu-system-x86)
have lz4 || need_pkgs+=(lz4)
have zstd || need_pkgs+=(zstd)

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing packages ${need_pkgs[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${need_pkgs[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# package.json "engines": Debian 12's own nodejs is 18.x; the node on PATH must be newer.
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 12) ? 0 : 1)'; then
  echo "setup: kube-proxy-ts needs Node.js >= 20.12, found $(node --version) at $(command -v node)" >&2
  exit 1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

./scripts/ensure-build.sh
