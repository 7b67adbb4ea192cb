/**
 * Replays upstream's nftables TestSyncProxyRulesRepeated on one writer and one fake kernel: each
 * step's whole state (YAML) is synced (full on the first, partial after), and the table, the
 * number of commands in the sync's transaction and the stale chains must be upstream's.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { parse } from "yaml";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import type { ProxyState } from "../../../src/proxy/types.ts";
import { changedServiceNames } from "../../support/iptables-golden.ts";
import { loadNftablesState, sortNFTablesDump } from "../../support/nftables-golden.ts";
import { fakeNftablesNode } from "../../support/nftables-writer.ts";

const FIXTURES = new URL("../../fixtures/nftables/", import.meta.url);
const DIR = new URL("SyncProxyRulesRepeated/", FIXTURES);

interface Step {
  readonly name: string;
  readonly ageStaleChains?: boolean;
  readonly operations?: number;
  readonly staleChains?: readonly string[];
}

const { steps } = parse(readFileSync(new URL("sequence.yaml", DIR), "utf8")) as { steps: Step[] };
const baseRules = readFileSync(new URL("baseRules.expected.txt", FIXTURES), "utf8");

test("SyncProxyRulesRepeated: every step's table, transaction size and stale chains match upstream", async () => {
  const settings = upstreamTestSettings("IPv4");
  const node = fakeNftablesNode(settings);
  let previous: ProxyState | null = null;
  let checked = 0;
  for (const step of steps) {
    const state = loadNftablesState(readFileSync(new URL(`${step.name}.yaml`, DIR), "utf8"), step.name, settings);
    if (step.ageStaleChains === true) await node.clock.advance(2_000);
    const outcome = await node.writer.write({
      state,
      fullSync: previous === null,
      changedServices: previous === null ? new Set() : changedServiceNames(previous, state),
      onTransaction: () => undefined,
    });
    previous = state;
    const expectedFile = new URL(`${step.name}.expected.txt`, DIR);
    if (existsSync(expectedFile)) {
      assert.equal(
        sortNFTablesDump(node.dump()),
        sortNFTablesDump(baseRules + readFileSync(expectedFile, "utf8")),
        `${step.name}: table`,
      );
      checked++;
    }
    if (step.operations !== undefined)
      assert.equal(outcome.details.operations, step.operations, `${step.name}: operations in the transaction`);
    if (step.staleChains !== undefined)
      assert.deepEqual(outcome.details.staleChains, [...step.staleChains].sort(), `${step.name}: stale chains`);
  }
  assert.equal(checked, 12, "every upstream expectation was compared");
});
