/**
 * Upstream's TestSyncProxyRulesStartup: a restarted proxier finds part of its table in the kernel
 * (upstream's `ParseDump`; here the same `add` lines applied to the fake) and its first sync must
 * leave exactly the table of the new state. Upstream also checks that its startup sync skips
 * unchanged elements and endpoint chains (setupOps + 14 operations); this writer rewrites
 * everything on a full sync, so only the resulting table is compared.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { loadNftablesState, sortNFTablesDump } from "../../support/nftables-golden.ts";
import { fakeNftablesNode } from "../../support/nftables-writer.ts";

const FIXTURES = new URL("../../fixtures/nftables/", import.meta.url);
const read = (name: string): string => readFileSync(new URL(name, FIXTURES), "utf8");

test("SyncProxyRulesStartup: the first sync over an existing table leaves upstream's table", async () => {
  const settings = upstreamTestSettings("IPv4");
  const node = fakeNftablesNode(settings);
  const baseRules = read("baseRules.expected.txt");
  node.kernel.apply(baseRules + read("SyncProxyRulesStartup/kernel-before.txt"));
  const state = loadNftablesState(read("SyncProxyRulesStartup/input.yaml"), "input.yaml", settings);
  await node.writer.write({ state, fullSync: true, changedServices: new Set(), onTransaction: () => undefined });
  assert.equal(
    sortNFTablesDump(node.dump()),
    sortNFTablesDump(baseRules + read("SyncProxyRulesStartup/expected.txt")),
  );
});
