/**
 * The netlink writer against its oracle: the same syncs applied through netlink in one network
 * namespace and through `nft -f` in another leave identical `nft list ruleset` output. Replayed:
 * upstream's overall golden, every phase of TestSyncProxyRulesRepeated (full, then partial syncs
 * with stale chains aging out), random states of both families, 1,000 Services × 10 endpoints
 * with a partial sync. And a refused batch: the error names the object, the rules stay as they
 * were, the next sync is a full one.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import fc from "fast-check";
import { parse } from "yaml";
import { pino } from "pino";
import {
  NetlinkNftablesKernel,
  readTableOverNetlink,
} from "../../../src/backends/nftables/netlink-kernel.ts";
import { NftablesWriter } from "../../../src/backends/nftables/proxier.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import type { NftablesSettings } from "../../../src/backends/nftables/types.ts";
import { Nft } from "../../../src/kernel/nft.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import type { IPFamily } from "../../../src/ip.ts";
import type { Endpoint, ProxyState, ServicePort } from "../../../src/proxy/types.ts";
import { endpoint, proxyState, servicePort } from "../../support/iptables-builders.ts";
import { changedServiceNames } from "../../support/iptables-golden.ts";
import { loadNftablesState } from "../../support/nftables-golden.ts";
import { stateArb, stateOf } from "../../support/nftables-states.ts";
import { runner, withNetns } from "../../support/netns.ts";

const FIXTURES = new URL("../../fixtures/nftables/", import.meta.url);
const read = (name: string): string => readFileSync(new URL(name, FIXTURES), "utf8");
const log = pino({ level: "silent" });

interface Pair {
  readonly viaNft: NftablesWriter;
  readonly viaNetlink: NftablesWriter;
  readonly netlink: NetlinkNftablesKernel;
  readonly clock: FakeClock;
  readonly nftNs: string;
  readonly netlinkNs: string;
}

async function withPair<T>(
  settings: NftablesSettings,
  body: (pair: Pair) => Promise<T>,
  netlinkServicesPerTransaction?: number,
): Promise<T> {
  return withNetns((nftNs) =>
    withNetns(async (netlinkNs) => {
      const family = settings.family === "IPv4" ? "ip" : "ip6";
      const clock = new FakeClock();
      const nftA = new Nft(runner, nftNs);
      const netlink = new NetlinkNftablesKernel({ family, netns: netlinkNs });
      const viaNft = new NftablesWriter({
        kernel: {
          apply: (t) => nftA.apply(t.payload),
          read: () => readTableOverNetlink({ family, netns: nftNs }),
        },
        settings,
        clock,
        log,
      });
      const viaNetlink = new NftablesWriter({
        // As the daemon wires it (backends/nftables/index.ts): chunks through applyAll.
        kernel: {
          apply: (t) => netlink.apply(t),
          applyAll: (ts, onSend) => netlink.applyAll(ts, onSend),
          read: () => readTableOverNetlink({ family, netns: netlinkNs }),
        },
        settings,
        clock,
        log,
        ...(netlinkServicesPerTransaction === undefined
          ? {}
          : { servicesPerTransaction: netlinkServicesPerTransaction }),
      });
      try {
        return await body({ viaNft, viaNetlink, netlink, clock, nftNs, netlinkNs });
      } finally {
        netlink.close();
      }
    }),
  );
}

const listRuleset = async (netns: string): Promise<string> =>
  (await runner.run(["nft", "list", "ruleset"], { netns, timeoutMs: 120_000 })).stdout;

/**
 * Syncs `states` in order through both writers and compares the rulesets after each (and the
 * sync details, unless the two writers cut full syncs into different transactions).
 */
async function replay(
  pair: Pair,
  states: readonly ProxyState[],
  label: string,
  waits: readonly number[] = [],
  options: { readonly sameDetails?: boolean; readonly fullAt?: readonly number[] } = {},
) {
  let previous: ProxyState | null = null;
  for (const [i, state] of states.entries()) {
    await pair.clock.advance(waits[i] ?? 0);
    const request = {
      state,
      fullSync: previous === null || (options.fullAt ?? []).includes(i),
      changedServices: previous === null ? new Set<string>() : changedServiceNames(previous, state),
      onTransaction: () => undefined,
    };
    const a = await pair.viaNft.write(request);
    const b = await pair.viaNetlink.write(request);
    if (options.sameDetails !== false)
      assert.deepEqual(b.details, a.details, `${label} step ${i + 1}: same sync`);
    else assert.equal(b.details.fullSync, a.details.fullSync, `${label} step ${i + 1}: same kind of sync`);
    previous = state;
    const [viaNft, viaNetlink] = await Promise.all([listRuleset(pair.nftNs), listRuleset(pair.netlinkNs)]);
    assert.ok(viaNft.includes("table "), `${label} step ${i + 1}: nft wrote a table`);
    assert.equal(viaNetlink, viaNft, `${label} step ${i + 1}: nft list ruleset`);
  }
}

test("upstream's overall golden and every phase of TestSyncProxyRulesRepeated: identical rulesets", async () => {
  const settings = upstreamTestSettings("IPv4");
  await withPair(settings, async (pair) => {
    const overall = loadNftablesState(read("OverallNFTablesRules.yaml"), "overall", settings);
    await replay(pair, [overall], "overall");
  });
  const { steps } = parse(read("SyncProxyRulesRepeated/sequence.yaml")) as {
    steps: Array<{ name: string; ageStaleChains?: boolean }>;
  };
  await withPair(settings, async (pair) => {
    const states = steps.map((s) =>
      loadNftablesState(read(`SyncProxyRulesRepeated/${s.name}.yaml`), s.name, settings),
    );
    await replay(
      pair,
      states,
      "SyncProxyRulesRepeated",
      steps.map((s) => (s.ageStaleChains === true ? 2_000 : 0)),
    );
  });
});

for (const family of ["IPv4", "IPv6"] as const satisfies readonly IPFamily[]) {
  test(`random ${family} states, full then partial syncs: identical rulesets`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ state: stateArb, wait: fc.constantFrom(0, 2_000) }), {
          minLength: 2,
          maxLength: 4,
        }),
        async (steps) =>
          withPair(upstreamTestSettings(family), (pair) =>
            replay(
              pair,
              steps.map((s) => stateOf(s.state, family)),
              family,
              steps.map((s) => s.wait),
            ),
          ),
      ),
      { numRuns: 6 },
    );
  });
}

test("full syncs in bounded transactions (one Service each) end where one transaction does", async () => {
  for (const family of ["IPv4", "IPv6"] as const) {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ state: stateArb, wait: fc.constantFrom(0, 2_000), full: fc.boolean() }), {
          minLength: 2,
          maxLength: 4,
        }),
        async (steps) =>
          withPair(
            upstreamTestSettings(family),
            (pair) =>
              replay(
                pair,
                [
                  ...steps.map((s) => stateOf(s.state, family)),
                  stateOf([...steps[0]!.state, ...steps[1]!.state], family),
                ],
                `chunked ${family}`,
                steps.map((s) => s.wait),
                { sameDetails: false, fullAt: [...steps.keys()].filter((i) => steps[i]!.full) },
              ),
            1,
          ),
      ),
      { numRuns: 4 },
    );
  }
});

function scaleState(services: number, endpoints: number, changed = -1): ProxyState {
  const entries: Array<[ServicePort, Endpoint[]]> = [];
  for (let i = 0; i < services; i++) {
    const sp = servicePort({
      namespace: `ns${i % 20}`,
      name: `svc${i}`,
      portName: "http",
      clusterIP: `172.30.${i >> 8}.${i & 255}`,
      nodePort: i % 2 === 0 ? 30000 + i : 0,
    });
    const eps: Endpoint[] = [];
    for (let j = 0; j < endpoints; j++) {
      const n = i * endpoints + j + (i === changed && j === 0 ? 200_000 : 0);
      eps.push(endpoint(`10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, 8080));
    }
    entries.push([sp, eps]);
  }
  return proxyState(entries);
}

test("1,000 Services × 10 endpoints, then a partial sync: identical rulesets", async () => {
  await withPair(upstreamTestSettings("IPv4"), (pair) =>
    replay(pair, [scaleState(1_000, 10), scaleState(1_000, 10, 7)], "1000x10"),
  );
});

test("a refused batch names the object, leaves the rules as they were, and the next sync is full", async () => {
  const settings = upstreamTestSettings("IPv4");
  await withPair(settings, async (pair) => {
    const overall = loadNftablesState(read("OverallNFTablesRules.yaml"), "overall", settings);
    await replay(pair, [overall], "before");
    const before = await listRuleset(pair.netlinkNs);
    // A foreign rule that jumps to one of our service chains pins it: deleting it must fail.
    const chain = /chain (service-[^ ]+ns1\/svc1\/tcp\/p80) \{/.exec(before)?.[1];
    assert.ok(chain !== undefined, "the overall golden has ns1/svc1's service chain");
    await runner.run(["nft", "add", "chain", "ip", "kube-proxy", "kpt-test-pin"], {
      netns: pair.netlinkNs,
      timeoutMs: 10_000,
    });
    await runner.run(["nft", "add", "rule", "ip", "kube-proxy", "kpt-test-pin", "jump", chain], {
      netns: pair.netlinkNs,
      timeoutMs: 10_000,
    });
    const pinned = await listRuleset(pair.netlinkNs);
    await assert.rejects(
      pair.netlink.apply({ payload: "", commands: [{ verb: "delete", what: "chain", chain }] }),
      (err: Error) => {
        assert.match(
          err.message,
          new RegExp(`delete chain ${chain.replace(/[/]/g, "\\/")}: Device or resource busy`),
        );
        return true;
      },
    );
    assert.equal(await listRuleset(pair.netlinkNs), pinned, "nothing of the refused batch was applied");
    // Through the writer: the stale-chain deletion is refused, so that sync is a full one.
    const empty = loadNftablesState(read("baseRules.yaml"), "empty", settings);
    const request = { state: empty, changedServices: new Set(["ns1/svc1"]), onTransaction: () => undefined };
    await pair.viaNetlink.write({ ...request, fullSync: false });
    await pair.clock.advance(2_000);
    const next = await pair.viaNetlink.write({ ...request, fullSync: false });
    assert.equal(next.details.fullSync, true, "after a refused batch the next sync is full");
    assert.deepEqual(next.details.deletedStaleChains, []);
    assert.ok(next.details.staleChains.includes(chain), "the pinned chain waits for deletion again");
    assert.match(await listRuleset(pair.netlinkNs), new RegExp(`chain ${chain.replace(/[/]/g, "\\/")} \\{`));
  });
});
