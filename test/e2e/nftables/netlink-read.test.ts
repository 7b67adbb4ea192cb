/**
 * The netlink reader against real kernel dumps: a table programmed by our writer (netlink
 * batches) and the same table programmed by `nft -f` (nft's own encoding) are read back with
 * NLM_F_DUMP requests and decoded; both must equal the model the writer keeps (the elements of
 * every set and map, the chains) and show no drift from the rendered table, rule by rule. Then
 * the reader must see what someone else did to the table: an element deleted, a rule added to
 * one of our chains, a changed element, a foreign chain and a foreign table.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import fc from "fast-check";
import { pino } from "pino";
import {
  readTableOverNetlink,
  NetlinkNftablesKernel,
} from "../../../src/backends/nftables/netlink-kernel.ts";
import { NftablesWriter } from "../../../src/backends/nftables/proxier.ts";
import { readTable } from "../../../src/backends/nftables/reader.ts";
import { renderNftables } from "../../../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { planFullSync, type KernelTable } from "../../../src/backends/nftables/transactions.ts";
import { Nft } from "../../../src/kernel/nft.ts";
import type { IPFamily } from "../../../src/ip.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import type { ProxyState } from "../../../src/proxy/types.ts";
import { loadNftablesState } from "../../support/nftables-golden.ts";
import { stateArb, stateOf } from "../../support/nftables-states.ts";
import { runner, withNetns } from "../../support/netns.ts";

const FIXTURES = new URL("../../fixtures/nftables/", import.meta.url);
const read = (name: string): string => readFileSync(new URL(name, FIXTURES), "utf8");
const log = pino({ level: "silent" });

const sorted = (t: KernelTable) => ({
  chains: [...t.chains].sort(),
  affinitySets: [...t.affinitySets].sort(),
  elements: [...t.elements]
    .map(([name, m]) => [name, [...m].sort(([a], [b]) => a.localeCompare(b))] as const)
    .sort(([a], [b]) => a.localeCompare(b)),
});

/** Programs `state` both ways (netlink in one namespace, `nft -f` in another) and checks both reads. */
async function programAndRead(state: ProxyState, family: IPFamily, label: string): Promise<void> {
  const settings = upstreamTestSettings(family);
  const nftFamily = family === "IPv4" ? "ip" : "ip6";
  const ruleset = renderNftables({ state, settings });
  const model = planFullSync(ruleset, null, { resetBaseChains: false }).after;
  await withNetns((nftNs) =>
    withNetns(async (netlinkNs) => {
      const netlink = new NetlinkNftablesKernel({ family: nftFamily, netns: netlinkNs });
      try {
        const writer = new NftablesWriter({
          kernel: {
            apply: (t) => netlink.apply(t),
            read: () => readTableOverNetlink({ family: nftFamily, netns: netlinkNs }),
          },
          settings,
          clock: new FakeClock(),
          log,
        });
        await writer.write({
          state,
          fullSync: true,
          changedServices: new Set(),
          onTransaction: () => undefined,
        });
        await new Nft(runner, nftNs).apply(planFullSync(ruleset, null, { resetBaseChains: true }).payload);
        for (const [how, netns] of [
          ["netlink", netlinkNs],
          ["nft -f", nftNs],
        ] as const) {
          const got = await readTableOverNetlink({ family: nftFamily, netns });
          assert.equal(got.dump.exists, true, `${label} (${how}): the table is read`);
          const reading = readTable(ruleset, got.dump, { ifIndex: got.ifIndex });
          assert.deepEqual(reading.drift.services, [], `${label} (${how}): no drift`);
          assert.equal(reading.drift.inSync, true, `${label} (${how}): in sync`);
          assert.deepEqual(reading.drift.foreign, [], `${label} (${how}): nothing foreign`);
          assert.deepEqual(sorted(reading.kernel), sorted(model), `${label} (${how}): the writer's model`);
          const endpointChains = ruleset.services
            .flatMap((s) => s.chains)
            .filter((c) => c.name.startsWith("endpoint-"));
          assert.deepEqual(
            [...reading.unchangedChains].sort(),
            endpointChains.map((c) => c.name).sort(),
            `${label} (${how}): every endpoint chain holds its rules`,
          );
        }
      } finally {
        netlink.close();
      }
    }),
  );
}

test("upstream's overall golden, written by netlink and by nft, reads back as the writer's model", async () => {
  const settings = upstreamTestSettings("IPv4");
  await programAndRead(
    loadNftablesState(read("OverallNFTablesRules.yaml"), "overall", settings),
    "IPv4",
    "overall",
  );
});

test("random states of both families read back as the writer's model", async () => {
  for (const family of ["IPv4", "IPv6"] as const)
    await fc.assert(
      fc.asyncProperty(stateArb, (variants) => programAndRead(stateOf(variants, family), family, family)),
      { numRuns: 6, seed: 12 },
    );
});

test("the reader sees what someone else changed, and names foreign objects apart", async () => {
  const settings = upstreamTestSettings("IPv4");
  const state = loadNftablesState(read("OverallNFTablesRules.yaml"), "overall", settings);
  const ruleset = renderNftables({ state, settings });
  await withNetns(async (netns) => {
    const nft = new Nft(runner, netns);
    await nft.apply(planFullSync(ruleset, null, { resetBaseChains: true }).payload);
    const svc1 = ruleset.services.find((s) => s.service === "ns1/svc1")!;
    const svcChain = svc1.chains.find((c) => c.name.startsWith("service-"))!;
    await nft.apply(
      [
        "delete element ip kube-proxy cluster-ips { 172.30.0.41 }",
        `add rule ip kube-proxy ${svcChain.name} counter accept`,
        "add chain ip kube-proxy someone-elses",
        "add table ip foreign",
        "add chain ip foreign input { type filter hook input priority 0 ; }",
        "",
      ].join("\n"),
    );
    const got = await readTableOverNetlink({ family: "ip", netns });
    const { drift } = readTable(ruleset, got.dump, { ifIndex: got.ifIndex });
    assert.equal(drift.inSync, false);
    assert.equal(drift.differences, 2);
    assert.deepEqual(
      drift.services.map((s) => ({
        service: s.service,
        objects: s.objects.map((o) => ({
          kind: o.kind,
          name: o.name,
          change: o.change,
          missing: o.missing,
          n: o.extra.length,
        })),
      })),
      [
        {
          service: "ns1/svc1",
          objects: [
            { kind: "chain", name: svcChain.name, change: "changed", missing: [], n: 1 },
            { kind: "set", name: "cluster-ips", change: "changed", missing: ["172.30.0.41"], n: 0 },
          ],
        },
      ],
    );
    assert.match(
      drift.services[0]!.objects[0]!.extra[0]!,
      /counter \(not written by kube-proxy-ts\); accept/,
    );
    assert.deepEqual(drift.foreign, [
      { kind: "table", table: "ip foreign", name: "foreign" },
      { kind: "chain", table: "ip kube-proxy", name: "someone-elses" },
    ]);
  });
});
