#!/usr/bin/env bash
# The compiled build (dist/) that the bin, the demo and the daemon in the tests run: rebuilt when
# missing or older than any source file, the build's tsconfig or the lock file. Needs no root.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=dist/.build-stamp
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ tsconfig.build.json -nt "$stamp" ] \
  || [ -n "$(find src -newer "$stamp" -print -quit)" ]; then
  echo "build: npm run build" >&2
  npm run --silent build
  touch "$stamp"
fi
