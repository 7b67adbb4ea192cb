/**
 * Whatever the sequence of changes and however much time passes between syncs, after each
 * partial sync the fake kernel must hold what one full sync of the same state writes into an
 * empty kernel, apart from the stale chains still waiting (empty) for their deletion. The fake
 * refuses what the kernel refuses (a missing chain, a still-referenced chain, an element that
 * exists with another value), so a wrongly ordered or incomplete transaction fails here too.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import type { ProxyState } from "../../../src/proxy/types.ts";
import { changedServiceNames } from "../../support/iptables-golden.ts";
import { sortNFTablesDump } from "../../support/nftables-golden.ts";
import { stateArb, stateOf } from "../../support/nftables-states.ts";
import { fakeNftablesNode } from "../../support/nftables-writer.ts";

const SETTINGS = upstreamTestSettings("IPv4");

/** The dump without the chains that wait, empty, for their deletion. */
function withoutStale(dump: string, stale: ReadonlySet<string>): string {
  return dump
    .split("\n")
    .filter((line) => {
      const m = /^add chain ip kube-proxy (\S+)$/.exec(line);
      return m === null || !stale.has(m[1]!);
    })
    .join("\n");
}

test("partial syncs leave the kernel as one full sync of the same state would", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ state: stateArb, wait: fc.constantFrom(0, 500, 2_000) }), {
        minLength: 1,
        maxLength: 8,
      }),
      async (steps) => {
        const node = fakeNftablesNode(SETTINGS);
        let previous: ProxyState | null = null;
        for (const [i, step] of steps.entries()) {
          const state = stateOf(step.state);
          await node.clock.advance(step.wait);
          await node.writer.write({
            state,
            fullSync: previous === null,
            changedServices: previous === null ? new Set() : changedServiceNames(previous, state),
            onTransaction: () => undefined,
          });
          previous = state;
          const fresh = fakeNftablesNode(SETTINGS);
          await fresh.writer.write({
            state,
            fullSync: true,
            changedServices: new Set(),
            onTransaction: () => undefined,
          });
          const stale = new Set(node.writer.pendingStaleChains.keys());
          assert.equal(
            sortNFTablesDump(withoutStale(node.dump(), stale)),
            sortNFTablesDump(fresh.dump()),
            `after step ${i + 1}`,
          );
        }
      },
    ),
    { numRuns: 150 },
  );
});
