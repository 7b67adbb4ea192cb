/**
 * Upstream's TestSyncProxyRulesStartup: a restarted proxier finds part of its table in the kernel
 * (upstream's `ParseDump`; here the same `add` lines applied to the fake) and its first sync must
 * leave exactly the table of the new state, writing only what differs: upstream's count is
 * `setupOps + 14` (svc3's ClusterIP into cluster-ips and no-endpoint-services: 2; the two
 * service chains rewritten, add + flush + 2 rules each: 8; svc1's new endpoint chain: 4; the
 * endpoint chains and elements already there are skipped). `setupOps` is, as upstream measures
 * it, the first sync of a proxier with no Services; here over a table holding only the fixed
 * objects, so that both syncs take the same path (a read of the table, then its difference).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import type { ProxyState } from "../../../src/proxy/types.ts";
import { loadNftablesState, sortNFTablesDump } from "../../support/nftables-golden.ts";
import { fakeNftablesNode } from "../../support/nftables-writer.ts";

const FIXTURES = new URL("../../fixtures/nftables/", import.meta.url);
const read = (name: string): string => readFileSync(new URL(name, FIXTURES), "utf8");
const EMPTY: ProxyState = { family: "IPv4", services: new Map(), endpoints: new Map(), nodeLabels: {} };

test("SyncProxyRulesStartup: the first sync over an existing table leaves upstream's table in setupOps + 14 operations", async () => {
  const settings = upstreamTestSettings("IPv4");
  const baseRules = read("baseRules.expected.txt");
  const sync = (node: ReturnType<typeof fakeNftablesNode>, state: ProxyState) =>
    node.writer.write({ state, fullSync: true, changedServices: new Set(), onTransaction: () => undefined });

  const empty = fakeNftablesNode(settings);
  empty.kernel.apply(baseRules);
  const setupOps = (await sync(empty, EMPTY)).details.operations;

  const node = fakeNftablesNode(settings);
  node.kernel.apply(baseRules + read("SyncProxyRulesStartup/kernel-before.txt"));
  const state = loadNftablesState(read("SyncProxyRulesStartup/input.yaml"), "input.yaml", settings);
  const outcome = await sync(node, state);
  assert.equal(
    sortNFTablesDump(node.dump()),
    sortNFTablesDump(baseRules + read("SyncProxyRulesStartup/expected.txt")),
  );
  assert.equal(outcome.details.operations, setupOps + 14, node.kernel.transactions.at(-1)?.join("\n"));
  assert.equal(node.kernel.transactions.length, 2, "baseRules, then one transaction: the table is small");
});
