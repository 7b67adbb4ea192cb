import { test } from "node:test";
import assert from "node:assert/strict";
import {
  CONNTRACK_TCP_BE_LIBERAL,
  ROUTE_LOCALNET,
  ensureSysctl,
  readSysctl,
} from "../../../src/kernel/sysctl.ts";
import {
  CT_STATE_INVALID_DROPPED_PKTS,
  ensureNfacctCounter,
  readNfacctCounters,
} from "../../../src/kernel/nfacct.ts";
import { runner, withNetns } from "../../support/netns.ts";

test("sysctls of a namespace are read and written through sysctl in that namespace", async () => {
  await withNetns(async (netns) => {
    const opts = { netns, runner };
    assert.equal(await readSysctl(ROUTE_LOCALNET, opts), "0");
    assert.equal(await ensureSysctl(ROUTE_LOCALNET, 1, opts), true);
    assert.equal(await ensureSysctl(ROUTE_LOCALNET, 1, opts), false);
    assert.equal(await readSysctl("net.ipv4.conf.all.route_localnet", opts), "1");
    assert.match(await readSysctl(CONNTRACK_TCP_BE_LIBERAL, opts), /^[01]$/);
  });
});

test("nfacct counters live in the namespace: ensure twice, then read", async () => {
  await withNetns(async (netns) => {
    assert.equal(await ensureNfacctCounter(runner, CT_STATE_INVALID_DROPPED_PKTS, { netns }), true);
    assert.equal(await ensureNfacctCounter(runner, CT_STATE_INVALID_DROPPED_PKTS, { netns }), true);
    const counters = await readNfacctCounters(runner, { netns });
    assert.deepEqual(counters, [{ name: CT_STATE_INVALID_DROPPED_PKTS, packets: 0n, bytes: 0n }]);
    assert.equal(
      await ensureNfacctCounter(runner, "x".repeat(64), { netns }),
      false,
      "names over 31 chars are rejected",
    );
  });
});
