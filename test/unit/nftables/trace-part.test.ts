/**
 * A live trace reads only the chains and sets its packet passes (readLiveNftablesForTrace),
 * here against a fake kernel that serves parts of upstream's overall table as we render it: the same outcomes
 * as on the whole table, far fewer chains, and a commit between two reads starts it again.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  explainNftService,
  readLiveNftablesForTrace,
  readNftablesDump,
  servicesInTable,
  type NftablesKernelReader,
} from "../../../src/backends/nftables/inspect.ts";
import { renderNftables } from "../../../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { planFullSync } from "../../../src/backends/nftables/transactions.ts";
import type { NftTable } from "../../../src/netfilter/nft/model.ts";
import { loadNftablesState } from "../../support/nftables-golden.ts";
import { traceNftPacket } from "../../../src/netfilter/nft/tracer.ts";
import { packetFromFlags } from "../../../src/netfilter/tracer.ts";

const SETTINGS = upstreamTestSettings("IPv4");
const state = loadNftablesState(
  readFileSync(new URL("../../fixtures/nftables/OverallNFTablesRules.yaml", import.meta.url), "utf8"),
  "overall",
  SETTINGS,
);
const payload = planFullSync(renderNftables({ state, settings: SETTINGS, featureGates: {} }), null, {
  resetBaseChains: false,
}).payload;
const whole = readNftablesDump({ text: payload, origin: "test" }).tables[0]!;

/** Serves named parts of `table` as the netlink reader does: chains with their rules and the sets they name. */
function fakeKernel(table: NftTable, generations: number[] = [1]) {
  const asked: string[] = [];
  let call = 0;
  const kernel: NftablesKernelReader = {
    generation: () => Promise.resolve(generations[0]!),
    tables({ what }) {
      const generation = generations[Math.min(call++, generations.length - 1)]!;
      assert.ok(what?.part === "named");
      const chains = new Map([...table.chains].filter(([n]) => what.chains.includes(n)));
      const named = new Set(what.sets);
      for (const c of chains.values())
        for (const r of c.rules) for (const m of r.text.matchAll(/@([\w.-]+)/g)) named.add(m[1]!);
      asked.push(...what.chains);
      const sets = new Map([...table.sets].filter(([n]) => named.has(n)));
      return Promise.resolve({ generation, tables: [{ ...table, chains, sets }], others: [] });
    },
  };
  return { kernel, asked };
}

test("a live trace of each frontend reads the packet's part only, with the outcomes of the whole table", async () => {
  let traced = 0;
  for (const ref of servicesInTable(whole)) {
    for (const f of explainNftService(whole, ref)!.frontends) {
      if (f.ip === undefined) continue;
      const { packet, origin } = packetFromFlags({
        src: "10.180.0.9:40000",
        dst: `${f.ip}:${f.port}`,
        from: "pod",
        proto: f.protocol,
      });
      const options = { localAddresses: ["192.168.0.2"], origin };
      const { kernel } = fakeKernel(whole);
      const read = await readLiveNftablesForTrace(
        "ip",
        (t) => traceNftPacket(t, packet, options),
        undefined,
        kernel,
      );
      const part = read.reading.tables[0]!;
      assert.deepEqual(
        traceNftPacket(part, packet, options),
        traceNftPacket(whole, packet, options),
        `${ref.namespace}/${ref.name} ${f.ip}:${f.port}`,
      );
      assert.ok(part.chains.size < whole.chains.size, `${part.chains.size} of ${whole.chains.size} chains`);
      assert.ok(read.rounds >= 2, "the base chains, then what they jump to");
      traced++;
    }
  }
  assert.ok(traced >= 5, `${traced} frontends`);
});

test("a commit between two reads starts the reading again", async () => {
  const { packet, origin } = packetFromFlags({ src: "10.180.0.9:40000", dst: "172.30.0.41:80", from: "pod" });
  const options = { localAddresses: [], origin };
  const { kernel, asked } = fakeKernel(whole, [1, 2, 2, 2, 2, 2, 2, 2]);
  const read = await readLiveNftablesForTrace(
    "ip",
    (t) => traceNftPacket(t, packet, options),
    undefined,
    kernel,
  );
  assert.equal(read.generation, 2);
  assert.equal(asked.filter((c) => c === "nat-prerouting").length, 2, "the base chains read twice");
  assert.deepEqual(
    traceNftPacket(read.reading.tables[0]!, packet, options),
    traceNftPacket(whole, packet, options),
  );
});
