#!/usr/bin/env bash
# The main job on its built-in default: the seed's nginx Service in a network-namespace sandbox,
# programmed by the real proxy daemon, with real traffic. Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec node dist/cli/main.js demo "$@"
