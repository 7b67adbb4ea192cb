#!/usr/bin/env -S node --max-semi-space-size=8
// Entry shim: run the compiled CLI (npm run build writes dist/).
// --max-semi-space-size=8: V8's young generation grows to 2 x 16 MB while a large first sync
// builds what it keeps; at 8 MB the daemon's peak RSS after 10,000 Services x 10 endpoints is
// ~20 MB lower at no CPU cost (bench/README.md, "Start-up"). The images set the same flag in
// NODE_OPTIONS (their entrypoint runs node itself); test/unit/deploy checks that they agree.
import { existsSync } from "node:fs";
import process from "node:process";
import { URL } from "node:url";

const main = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(main)) {
  process.stderr.write("kube-proxy-ts: dist/ is missing: run `npm run build` first\n");
  process.exit(1);
}
await import(main.href);
