#!/usr/bin/env bash
# The whole test suite: type-check, lint, unit + golden + end-to-end tests (real kernel, in
# network namespaces; needs root), with coverage. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
KPT_WITH_BROWSER=1 ./scripts/setup.sh
npm run --silent typecheck
npm run --silent lint
mapfile -t files < <(find test -name '*.test.ts' | sort)
npx c8 --reporter=text-summary node --import tsx --test --test-concurrency=1 "${files[@]}"
