/**
 * Upstream's nftables goldens (pkg/proxy/nftables/proxier_test.go, see
 * test/fixtures/nftables/README.md): real Kubernetes YAML → model → renderer → writer → a fake
 * kernel, whose table must equal upstream's expected knftables dump (both sides put in
 * upstream's canonical order first).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { loadNftablesState, sortNFTablesDump } from "../../support/nftables-golden.ts";
import { fakeNftablesNode } from "../../support/nftables-writer.ts";

const FIXTURES = new URL("../../fixtures/nftables/", import.meta.url);
const read = (name: string): string => readFileSync(new URL(name, FIXTURES), "utf8");
const SETTINGS = upstreamTestSettings("IPv4");

async function syncOnce(input: string): Promise<string> {
  const node = fakeNftablesNode(SETTINGS);
  const state = loadNftablesState(read(input), input, SETTINGS);
  await node.writer.write({ state, fullSync: true, changedServices: new Set(), onTransaction: () => undefined });
  return node.dump();
}

test("baseRules: an empty state gives upstream's skeleton exactly", async () => {
  assert.equal(sortNFTablesDump(await syncOnce("baseRules.yaml")), sortNFTablesDump(read("baseRules.expected.txt")));
});

test("TestOverallNFTablesRules: six Services of every kind give upstream's table exactly", async () => {
  const expected = read("baseRules.expected.txt") + read("OverallNFTablesRules.expected.txt");
  assert.equal(sortNFTablesDump(await syncOnce("OverallNFTablesRules.yaml")), sortNFTablesDump(expected));
});

test("TestBadIPs: leading-zero addresses and CIDRs reach the table canonical, as upstream's", async () => {
  const expected = read("baseRules.expected.txt") + read("BadIPs.expected.txt");
  assert.equal(sortNFTablesDump(await syncOnce("BadIPs.yaml")), sortNFTablesDump(expected));
});
