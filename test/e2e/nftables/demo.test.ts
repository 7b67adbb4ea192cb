/**
 * `kube-proxy-ts demo --proxy-mode nftables`: the seed's walk through the nftables objects on a
 * real kernel. The compiled CLI runs the whole demo (its own sandbox, the real daemon in
 * nftables mode, real traffic); it must answer every request and show the walk from the live
 * table: services → @service-ips → service-… → numgen → endpoint-… → DNAT, with conntrack
 * entries per endpoint, then the spread over three endpoints after the scale-up.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { promisify } from "node:util";
import { selfArgv } from "../../../src/cli/self.ts";
import { SEED } from "../../../src/sandbox/seed.ts";

const run = promisify(execFile);

test(
  "demo --proxy-mode nftables walks the seed Service through the live table",
  { timeout: 300_000 },
  async () => {
    const [cmd, ...args] = selfArgv(["demo", "--proxy-mode", "nftables", "--requests", "8"]);
    const { stdout } = await run(cmd!, args, { timeout: 280_000, maxBuffer: 8 * 1024 * 1024 });
    assert.match(stdout, /Start kube-proxy-ts in the node namespace \(nftables mode/);
    assert.match(stdout, /services rule 1: ip daddr \. meta l4proto \. th dport vmap @service-ips/);
    assert.match(
      stdout,
      new RegExp(
        `@service-ips element ${SEED.clusterIP.replace(/\./g, "\\.")} \\. tcp \\. 80 : goto service-`,
      ),
    );
    assert.match(stdout, /rule \d: numgen random mod 2 vmap \{ 0 : goto endpoint-/);
    assert.match(stdout, /meta l4proto tcp dnat to 10\.244\.0\.\d+:80/);
    const counts = [...stdout.matchAll(/default\/nginx 10\.244\.0\.\d+:80\/tcp: (\d+)/g)].map((m) =>
      Number(m[1]),
    );
    assert.equal(counts.length, 2, "conntrack entries for both endpoints");
    assert.ok(
      counts.reduce((a, b) => a + b, 0) >= 8,
      `the connections just made are counted: ${counts.join(", ")}`,
    );
    assert.match(stdout, /numgen \d of 3\)/, "the walk after the scale-up shows three endpoints");
    assert.match(stdout, /Demo complete: every request was answered/);
  },
);
