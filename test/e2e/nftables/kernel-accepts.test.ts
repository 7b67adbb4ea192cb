/**
 * The real kernel accepts every transaction the writer sends and ends up where the fake kernel
 * says: random sequences of states (IPv4 and IPv6) synced in full then partially, with time
 * passing so that stale chains get deleted, into a namespace of their own and into the fake side
 * by side. After each sync both hold the same chains with the same number of rules, and the same
 * number of elements in every set and map. The interface-based local detectors load while the
 * interface is absent (matched by name, as upstream).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { pino } from "pino";
import { NftablesWriter } from "../../../src/backends/nftables/proxier.ts";
import { readTableOverNetlink } from "../../../src/backends/nftables/netlink-kernel.ts";
import { renderNftables } from "../../../src/backends/nftables/render.ts";
import { planFullSync } from "../../../src/backends/nftables/transactions.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { Nft } from "../../../src/kernel/nft.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import type { IPFamily } from "../../../src/ip.ts";
import type { ProxyState } from "../../../src/proxy/types.ts";
import { endpoint, proxyState, servicePort } from "../../support/iptables-builders.ts";
import { changedServiceNames } from "../../support/iptables-golden.ts";
import { FakeNft } from "../../support/nftables-fake.ts";
import { stateArb, stateOf } from "../../support/nftables-states.ts";
import { runner, withNetns } from "../../support/netns.ts";

interface Shape {
  readonly chains: Record<string, number>;
  readonly containers: Record<string, number>;
}

/** `nft -j list table` reduced to chain → rule count and set/map → element count. */
function kernelShape(json: string): Shape {
  const items = (JSON.parse(json) as { nftables: Array<Record<string, Record<string, unknown>>> }).nftables;
  const chains: Record<string, number> = {};
  const containers: Record<string, number> = {};
  for (const item of items) {
    if (item["chain"] !== undefined) chains[item["chain"]["name"] as string] ??= 0;
    if (item["rule"] !== undefined) {
      const chain = item["rule"]["chain"] as string;
      chains[chain] = (chains[chain] ?? 0) + 1;
    }
    for (const kind of ["set", "map"]) {
      const c = item[kind];
      if (c !== undefined) containers[c["name"] as string] = Array.isArray(c["elem"]) ? c["elem"].length : 0;
    }
  }
  return { chains, containers };
}

function fakeShape(dump: string): Shape {
  const chains: Record<string, number> = {};
  const containers: Record<string, number> = {};
  for (const line of dump.split("\n")) {
    const m = /^add (chain|rule|set|map|element) \S+ \S+ (\S+)/.exec(line);
    if (m === null) continue;
    const [, what, name] = m as unknown as [string, string, string];
    if (what === "chain") chains[name] ??= 0;
    else if (what === "rule") chains[name] = (chains[name] ?? 0) + 1;
    else if (what === "element") containers[name] = (containers[name] ?? 0) + 1;
    else containers[name] ??= 0;
  }
  return { chains, containers };
}

async function replay(
  netns: string,
  family: IPFamily,
  states: readonly ProxyState[],
  waits: readonly number[],
) {
  const nftFamily = family === "IPv4" ? "ip" : "ip6";
  const settings = upstreamTestSettings(family);
  const nft = new Nft(runner, netns);
  const fake = new FakeNft();
  const clock = new FakeClock();
  const real = new NftablesWriter({
    kernel: {
      apply: (t) => nft.apply(t.payload),
      read: () => readTableOverNetlink({ family: nftFamily, netns }),
    },
    settings,
    clock,
    log: pino({ level: "silent" }),
  });
  const shadow = new NftablesWriter({
    kernel: {
      apply: async (t) => fake.apply(t.payload),
      read: async () => ({ dump: fake.tableDump(nftFamily, "kube-proxy"), ifIndex: () => 1 }),
    },
    settings,
    clock,
    log: pino({ level: "silent" }),
  });
  let previous: ProxyState | null = null;
  for (const [i, state] of states.entries()) {
    await clock.advance(waits[i] ?? 0);
    const request = {
      state,
      fullSync: previous === null,
      changedServices: previous === null ? new Set<string>() : changedServiceNames(previous, state),
      onTransaction: () => undefined,
    };
    await real.write(request);
    await shadow.write(request);
    previous = state;
    const listed = await runner.run(["nft", "-j", "list", "table", nftFamily, "kube-proxy"], {
      netns,
      timeoutMs: 30_000,
    });
    assert.deepEqual(
      kernelShape(listed.stdout),
      fakeShape(fake.dump(nftFamily, "kube-proxy")),
      `${family} step ${i + 1}`,
    );
  }
}

for (const family of ["IPv4", "IPv6"] as const) {
  test(`the kernel accepts every ${family} sync and matches the fake after each`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ state: stateArb, wait: fc.constantFrom(0, 2_000) }), {
          minLength: 2,
          maxLength: 5,
        }),
        async (steps) =>
          withNetns((netns) =>
            replay(
              netns,
              family,
              steps.map((s) => stateOf(s.state, family)),
              steps.map((s) => s.wait),
            ),
          ),
      ),
      { numRuns: 12 },
    );
  });
}

test("the kernel accepts the interface-based local detectors while no such interface exists", async () => {
  const sp = servicePort({ namespace: "ns1", name: "svc1", clusterIP: "172.30.0.41", nodePort: 30001 });
  const state = proxyState([[sp, [endpoint("10.180.0.1", 80)]]]);
  for (const localDetector of [
    { mode: "BridgeInterface", interfaceName: "kpt-nobr0" },
    { mode: "InterfaceNamePrefix", prefix: "kpt-noveth" },
  ] as const) {
    await withNetns(async (netns) => {
      const ruleset = renderNftables({ state, settings: { ...upstreamTestSettings("IPv4"), localDetector } });
      await new Nft(runner, netns).apply(planFullSync(ruleset, null, { resetBaseChains: true }).payload);
      const listed = await runner.run(["nft", "list", "table", "ip", "kube-proxy"], {
        netns,
        timeoutMs: 30_000,
      });
      assert.match(listed.stdout, /iifname != "kpt-no/, localDetector.mode);
    });
  }
});
