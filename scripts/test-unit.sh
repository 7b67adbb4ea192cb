#!/usr/bin/env bash
# The unit and golden tests: they need neither root nor a kernel (no namespaces, no netfilter).
# Run as root, they run with every capability dropped, so a test that needs the kernel fails here
# instead of passing only because the runner happened to be privileged.
set -euo pipefail
cd "$(dirname "$0")/.."
# tsx would keep a transpile cache in $TMPDIR (tsx-<uid>/) that outlives the run; the tests
# leave nothing behind in /tmp.
export TSX_DISABLE_CACHE=1
# Two tests run the CLI as a user would, which is the compiled build.
./scripts/ensure-build.sh
mapfile -t files < <(find test/unit test/golden -name '*.test.ts' | sort)
drop=()
if [ "$(id -u)" = 0 ]; then drop=(setpriv --inh-caps=-all --bounding-set=-all --); fi
exec "${drop[@]}" node --import tsx --test --test-concurrency=1 "${files[@]}"
