/**
 * The see-inside tools' netlink read (src/backends/nftables/netlink-listing.ts) against a real
 * kernel: a table programmed with `nft -f` (nft's own encoding) is read back over netlink into
 * the model trace, explain and the web view use, and must equal the rendered payload read by the
 * dump parser: every chain with its hook, every rule's text (the statements are read from it),
 * every set's type,
 * flags, timeout and elements. Reading only one Service's part gives that Service the same
 * explanation as the whole table, and so does its items of `nft -j list table`. A foreign table is named, never read; the generation moves
 * with every commit and only then.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import fc from "fast-check";
import {
  explainNftService,
  servicesInTable,
  readLiveNftablesForTrace,
  sliceNftDump,
  splitTables,
} from "../../../src/backends/nftables/inspect.ts";
import { readGeneration, readTablesOverNetlink } from "../../../src/backends/nftables/netlink-listing.ts";
import { renderNftables } from "../../../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { planFullSync } from "../../../src/backends/nftables/transactions.ts";
import { Nft } from "../../../src/kernel/nft.ts";
import { traceNftPacket } from "../../../src/netfilter/nft/tracer.ts";
import { packetFromFlags } from "../../../src/netfilter/tracer.ts";
import type { IPFamily } from "../../../src/ip.ts";
import type { NftTable } from "../../../src/netfilter/nft/model.ts";
import { parseNftDump } from "../../../src/netfilter/nft/parse.ts";
import type { ProxyState } from "../../../src/proxy/types.ts";
import { loadNftablesState } from "../../support/nftables-golden.ts";
import { stateArb, stateOf } from "../../support/nftables-states.ts";
import { runner, withNetns } from "../../support/netns.ts";

const FIXTURES = new URL("../../fixtures/nftables/", import.meta.url);

/**
 * What the kernel cannot tell apart: a one-element `{ … }` compiles to a plain match, and a mark
 * is a number (the settings may spell it 0x4000 or 0x00004000).
 */
const normalText = (text: string): string =>
  text.replace(/ \{ ([^{},\s]+) \}/g, " $1").replace(/\b0x0*([0-9a-f]+)\b/g, "0x$1");

function comparable(t: NftTable) {
  return {
    comment: t.comment,
    chains: [...t.chains.values()]
      .map((c) => ({
        name: c.name,
        base: c.base,
        comment: c.comment,
        rules: c.rules.map((r) => ({ text: normalText(r.text), comment: r.comment })),
      }))
      .sort((a, b) => a.name.localeCompare(b.name)),
    sets: [...t.sets.values()]
      .map((s) => ({
        ...s,
        flags: [...s.flags].sort(),
        elements: [...s.elements].sort((a, b) => a.key.join(" ").localeCompare(b.key.join(" "))),
      }))
      .sort((a, b) => a.name.localeCompare(b.name)),
  };
}

async function programAndList(state: ProxyState, family: IPFamily, label: string): Promise<void> {
  const settings = upstreamTestSettings(family);
  const nftFamily = family === "IPv4" ? "ip" : "ip6";
  const ruleset = renderNftables({ state, settings });
  const payload = planFullSync(ruleset, null, { resetBaseChains: true }).payload;
  await withNetns(async (netns) => {
    const nft = new Nft(runner, netns);
    await nft.apply(payload);
    await nft.apply(`add table inet someone-else\nadd chain inet someone-else c\n`);
    const gen = await readGeneration(netns);
    assert.equal(await readGeneration(netns), gen, `${label}: no commit, same generation`);
    const live = await readTablesOverNetlink({ netns });
    assert.equal(live.generation, gen);
    assert.deepEqual(live.others, [{ family: "inet", name: "someone-else" }], `${label}: the foreign table`);
    assert.deepEqual(
      live.tables.map((t) => t.family),
      [nftFamily],
    );
    const want = parseNftDump(payload).tables.find((t) => t.family === nftFamily)!;
    assert.deepEqual(comparable(live.tables[0]!), comparable(want), `${label}: the table as rendered`);
    const json = (
      await runner.run(["nft", "-j", "list", "table", nftFamily, "kube-proxy"], { netns, timeoutMs: 30_000 })
    ).stdout;
    for (const ref of servicesInTable(want)) {
      const fromJson = splitTables(sliceNftDump(json, ref)).tables[0]!;
      assert.deepEqual(
        explainNftService(fromJson, ref),
        explainNftService(splitTables(parseNftDump(json)).tables[0]!, ref),
        `${label}: ${ref.namespace}/${ref.name} from its items of nft -j`,
      );
      const only = await readTablesOverNetlink({ netns, what: { part: "service", service: ref } });
      assert.deepEqual(
        explainNftService(only.tables[0]!, ref),
        explainNftService(live.tables[0]!, ref),
        `${label}: ${ref.namespace}/${ref.name} from its own part of the table`,
      );
    }
    // A live trace reads only the chains and sets its packet passes: the same outcomes and paths
    // as on the whole table, for each frontend, a node's own connection, and no Service at all.
    const whole = live.tables[0]!;
    const packets = servicesInTable(want).flatMap((ref) =>
      explainNftService(whole, ref)!.frontends.flatMap((f) =>
        f.ip === undefined
          ? []
          : [
              { src: family === "IPv4" ? "10.180.0.9:40000" : "[fd00:10:180::9]:40000", from: "pod" },
              { src: family === "IPv4" ? "10.0.77.1:40000" : "[fd00:77::1]:40000", from: "node" },
            ].map((p) => ({
              ...p,
              dst: f.ip!.includes(":") ? `[${f.ip}]:${f.port}` : `${f.ip}:${f.port}`,
              proto: f.protocol,
            })),
      ),
    );
    packets.push({
      src: family === "IPv4" ? "10.180.0.9:40000" : "[fd00:10:180::9]:40000",
      from: "pod",
      dst: family === "IPv4" ? "10.99.99.99:80" : "[fd00:99::99]:80",
      proto: "tcp",
    });
    for (const flags of packets) {
      const { packet, origin } = packetFromFlags(flags);
      const options = { localAddresses: [], origin };
      const read = await readLiveNftablesForTrace(
        nftFamily,
        (t) => traceNftPacket(t, packet, options),
        netns,
      );
      assert.deepEqual(read.reading.foreign, ["table inet someone-else"]);
      assert.deepEqual(
        traceNftPacket(read.reading.tables[0]!, packet, options),
        traceNftPacket(whole, packet, options),
        `${label}: ${flags.src} → ${flags.dst} from ${flags.from}, in ${read.rounds} reads`,
      );
      assert.ok(read.reading.tables[0]!.chains.size < whole.chains.size || whole.chains.size < 20);
    }
    await nft.apply(`add chain inet someone-else d\n`);
    assert.notEqual(await readGeneration(netns), gen, `${label}: a commit moves the generation`);
  });
}

test("the netlink listing of upstream's overall table equals the rendered payload (IPv4)", async () => {
  const settings = upstreamTestSettings("IPv4");
  const yaml = readFileSync(new URL("OverallNFTablesRules.yaml", FIXTURES), "utf8");
  await programAndList(loadNftablesState(yaml, "overall", settings), "IPv4", "overall");
});

test("the netlink listing equals the rendered payload for generated states (both families)", async () => {
  await fc.assert(
    fc.asyncProperty(stateArb, fc.constantFrom<IPFamily>("IPv4", "IPv6"), async (spec, family) => {
      await programAndList(stateOf(spec, family), family, `generated ${family}`);
    }),
    { numRuns: 6, seed: 14 },
  );
});
