#!/usr/bin/env node
// Entry shim: run the compiled CLI (npm run build writes dist/).
import { existsSync } from "node:fs";
import process from "node:process";
import { URL } from "node:url";

const main = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(main)) {
  process.stderr.write("kube-proxy-ts: dist/ is missing: run `npm run build` first\n");
  process.exit(1);
}
await import(main.href);
