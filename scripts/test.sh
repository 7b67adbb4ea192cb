#!/usr/bin/env bash
# The whole test suite: type-check, lint, the unit + golden tests (no privileges: see
# test-unit.sh), then the end-to-end tests (real kernel, in network namespaces; needs root), with
# one coverage report over both, then the ipvs-mode suite in a VM (test/vm/ipvs.test.ts: this
# kernel has no IPVS). Installs what is missing first (packages, npm ci, the build).
# The e2e run includes the image test (test/e2e/image/): the image is built first with
# `npm run image`, whose Debian layer and Node.js package are cached outside the clone
# (scripts/image/build.sh), so a repeated run costs about a minute. KPT_SKIP_IMAGE=1 skips both
# the build and that test (reported as skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
# tsx would keep a transpile cache in $TMPDIR (tsx-<uid>/) that outlives the run; the tests
# leave nothing behind in /tmp.
export TSX_DISABLE_CACHE=1
KPT_WITH_BROWSER=1 KPT_WITH_IMAGE=1 ./scripts/setup.sh
npm run --silent typecheck
npm run --silent lint
npx c8 --clean=true --reporter=none ./scripts/test-unit.sh
if [ "${KPT_SKIP_IMAGE:-0}" != 1 ]; then
  npm run --silent image
  export KPT_IMAGE_TEST=1
fi
mapfile -t files < <(find test/e2e -name '*.test.ts' | sort)
npx c8 --clean=false --reporter=none node --import tsx --test --test-concurrency=1 "${files[@]}"
npx c8 report --reporter=text-summary
npm run --silent test:ipvs
