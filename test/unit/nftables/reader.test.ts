/**
 * The reader and the writer's use of it, on the fake kernel (whose `tableDump` compiles its rule
 * texts as the kernel's copy would decode): what counts as drift and what as foreign, that a
 * partial sync never reads the table, and that a restart over a large existing table syncs it by
 * difference in bounded transactions, never half-programming a Service.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { readTable } from "../../../src/backends/nftables/reader.ts";
import { renderNftables } from "../../../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { planFullSync } from "../../../src/backends/nftables/transactions.ts";
import { NftablesWriter } from "../../../src/backends/nftables/proxier.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import type { Endpoint, ProxyState, ServicePort } from "../../../src/proxy/types.ts";
import { pino } from "pino";
import { endpoint, proxyState, servicePort } from "../../support/iptables-builders.ts";
import { FakeNft } from "../../support/nftables-fake.ts";
import { sortNFTablesDump } from "../../support/nftables-golden.ts";

const SETTINGS = upstreamTestSettings("IPv4");

function manyServices(count: number, shift = 0): ProxyState {
  const entries: Array<[ServicePort, Endpoint[]]> = [];
  for (let i = 0; i < count; i++) {
    const sp = servicePort({
      namespace: `ns${i % 7}`,
      name: `svc${i}`,
      portName: "http",
      clusterIP: `172.30.${i >> 8}.${i & 255}`,
      nodePort: i % 3 === 0 ? 30000 + i : 0,
    });
    const n = i * 2 + (i % 50 === 0 ? shift : 0);
    entries.push([
      sp,
      [endpoint(`10.1.${(n >> 8) & 255}.${n & 255}`, 8080), endpoint(`10.2.${i >> 8}.${i & 255}`, 8080)],
    ]);
  }
  return proxyState(entries);
}

function programmed(state: ProxyState): { fake: FakeNft; ruleset: ReturnType<typeof renderNftables> } {
  const ruleset = renderNftables({ state, settings: SETTINGS });
  const fake = new FakeNft();
  fake.apply(planFullSync(ruleset, null, { resetBaseChains: true }).payload);
  return { fake, ruleset };
}

const drift = (fake: FakeNft, ruleset: ReturnType<typeof renderNftables>, pending: string[] = []) =>
  readTable(ruleset, fake.tableDump("ip", "kube-proxy"), {
    ifIndex: () => 1,
    pendingStaleChains: new Set(pending),
  }).drift;

test("a table as the proxy wrote it is in sync, and every endpoint chain is unchanged", () => {
  const { fake, ruleset } = programmed(manyServices(4));
  const reading = readTable(ruleset, fake.tableDump("ip", "kube-proxy"), { ifIndex: () => 1 });
  assert.equal(reading.drift.inSync, true, JSON.stringify(reading.drift, null, 2));
  assert.equal(reading.absent, false);
  const endpointChains = ruleset.services
    .flatMap((s) => s.chains.map((c) => c.name))
    .filter((n) => n.startsWith("endpoint-"));
  assert.equal(endpointChains.length, 8);
  assert.deepEqual([...reading.unchangedChains].sort(), endpointChains.sort());
});

test("drift: an emptied chain, a stale chain, a changed base chain, a changed element; foreign apart", () => {
  const state = manyServices(3);
  const { fake, ruleset } = programmed(state);
  const svc0 = ruleset.services[0]!;
  const endpointChain = svc0.chains.find((c) => c.name.startsWith("endpoint-"))!;
  const element = svc0.elements.find((e) => e.container === "service-ips")!;
  fake.apply(
    [
      "add chain ip kube-proxy endpoint-AAAAAAAA-ns9/gone/tcp/http__10.9.9.9/80",
      `flush chain ip kube-proxy ${endpointChain.name}`,
      `delete element ip kube-proxy service-ips { ${element.key} }`,
      `add element ip kube-proxy service-ips { ${element.key} : drop }`,
      "add rule ip kube-proxy nat-output jump services",
      "add set ip kube-proxy someone-elses { type ipv4_addr ; }",
      "add table ip other",
      "",
    ].join("\n"),
  );
  const report = drift(fake, ruleset);
  const summary = report.services.map((s) => [
    s.service,
    s.objects.map((o) => `${o.kind} ${o.name} ${o.change} -${o.missing.length} +${o.extra.length}`),
  ]);
  assert.deepEqual(summary, [
    [null, ["chain nat-output changed -0 +1"]],
    [
      svc0.service,
      [
        `chain ${endpointChain.name} changed -${endpointChain.rules.length} +0`,
        "map service-ips changed -1 +1",
      ],
    ],
    ["ns9/gone", ["chain endpoint-AAAAAAAA-ns9/gone/tcp/http__10.9.9.9/80 extra -0 +0"]],
  ]);
  assert.equal(report.differences, 1 + endpointChain.rules.length + 2 + 1);
  assert.deepEqual(report.foreign, [
    { kind: "table", table: "ip other", name: "other" },
    { kind: "set", table: "ip kube-proxy", name: "someone-elses" },
  ]);
  assert.deepEqual(
    drift(fake, ruleset, ["endpoint-AAAAAAAA-ns9/gone/tcp/http__10.9.9.9/80"]).services.map((s) => s.service),
    [null, svc0.service],
    "a flushed chain waiting for its deletion is not drift",
  );
});

test("an absent table is one missing object", () => {
  const ruleset = renderNftables({ state: manyServices(2), settings: SETTINGS });
  const reading = readTable(ruleset, new FakeNft().tableDump("ip", "kube-proxy"), { ifIndex: () => 1 });
  assert.equal(reading.absent, true);
  assert.equal(reading.drift.differences, 1);
});

function writerOn(fake: FakeNft, reads: { n: number }, servicesPerTransaction?: number) {
  return new NftablesWriter({
    kernel: {
      apply: async (t) => fake.apply(t.payload),
      read: async () => {
        reads.n++;
        return { dump: fake.tableDump("ip", "kube-proxy"), ifIndex: () => 1 };
      },
    },
    settings: SETTINGS,
    clock: new FakeClock(),
    log: pino({ level: "silent" }),
    ...(servicesPerTransaction === undefined ? {} : { servicesPerTransaction }),
  });
}

test("partial syncs never read the table; full syncs do", async () => {
  const fake = new FakeNft();
  const reads = { n: 0 };
  const writer = writerOn(fake, reads);
  const request = (state: ProxyState, fullSync: boolean, changed: string[] = []) => ({
    state,
    fullSync,
    changedServices: new Set(changed),
    onTransaction: () => undefined,
  });
  await writer.write(request(manyServices(5), true));
  assert.equal(reads.n, 1);
  for (let i = 1; i <= 4; i++) await writer.write(request(manyServices(5, i), false, ["ns0/svc0"]));
  assert.equal(reads.n, 1, "four partial syncs, no read");
  await writer.write(request(manyServices(5), true));
  assert.equal(reads.n, 2);
});

test("a restart over a large existing table: by difference, in bounded transactions, whole Services", async () => {
  const fake = new FakeNft();
  const old = manyServices(600);
  fake.apply(
    planFullSync(renderNftables({ state: old, settings: SETTINGS }), null, { resetBaseChains: true }).payload,
  );
  // Someone also left an element the new state does not have.
  fake.apply("add element ip kube-proxy cluster-ips { 172.30.200.1 }\n");
  const before = fake.transactions.length;
  const now = manyServices(590, 100_000);
  const writer = writerOn(fake, { n: 0 }, 250);
  const outcome = await writer.write({
    state: now,
    fullSync: true,
    changedServices: new Set(),
    onTransaction: () => undefined,
  });
  const sent = fake.transactions.slice(before);
  // skeleton, three chunks of Services, then what no Service uses.
  assert.equal(sent.length, 5, sent.map((t) => t.length).join(", "));
  const wanted = planFullSync(renderNftables({ state: now, settings: SETTINGS }), null, {
    resetBaseChains: false,
  });
  assert.ok(
    outcome.details.operations < wanted.operations,
    `${outcome.details.operations} < ${wanted.operations}`,
  );
  const last = sent.at(-1)!;
  assert.ok(last.includes("delete element ip kube-proxy cluster-ips { 172.30.200.1 }"), last.join("\n"));
  assert.ok(
    last.some((c) => /^flush chain ip kube-proxy service-\S+-ns\d\/svc59\d\//.test(c)),
    "stale chains flushed last",
  );
  // The fake refuses an element whose chain is not there at that point of its transaction, so
  // getting here means every chunk added a Service's chains before the elements pointing to them.
  const fresh = new FakeNft();
  fresh.apply(wanted.payload);
  const stale = new Set(outcome.details.staleChains);
  const withoutStale = (dump: string) =>
    dump
      .split("\n")
      .filter((l) => !stale.has(/^add chain ip kube-proxy (\S+)$/.exec(l)?.[1] ?? ""))
      .join("\n");
  assert.equal(
    sortNFTablesDump(withoutStale(fake.dump("ip", "kube-proxy"))),
    sortNFTablesDump(fresh.dump("ip", "kube-proxy")),
  );
});

test("a later full sync leaves every chain that holds exactly its rules; the first rewrites the Service chains", async () => {
  const fake = new FakeNft();
  const writer = writerOn(fake, { n: 0 }, 250);
  const full = (state: ProxyState) =>
    writer.write({ state, fullSync: true, changedServices: new Set(), onTransaction: () => undefined });
  const state = manyServices(600);
  await full(state);
  const chainWrites = (from: number) =>
    fake.transactions
      .slice(from)
      .flat()
      .filter((c) => /^add (chain|rule) ip kube-proxy \S*\//.test(c));
  // A restart: a new writer's first sync over the table rewrites the Service chains (as upstream).
  const restarted = writerOn(fake, { n: 0 }, 250);
  let before = fake.transactions.length;
  await restarted.write({
    state,
    fullSync: true,
    changedServices: new Set(),
    onTransaction: () => undefined,
  });
  const firstSync = chainWrites(before);
  assert.ok(
    firstSync.some((c) => c.startsWith("add rule ip kube-proxy service-")),
    "service chains rewritten",
  );
  assert.ok(!firstSync.some((c) => / kube-proxy endpoint-/.test(c)), "endpoint chains left");
  // The next full sync (hourly, after a failure) touches only what differs: one Service's endpoints.
  const changed = manyServices(600, 1);
  before = fake.transactions.length;
  await restarted.write({
    state: changed,
    fullSync: true,
    changedServices: new Set(),
    onTransaction: () => undefined,
  });
  const later = chainWrites(before);
  const touched = new Set(later.map((c) => /\/(svc\d+)\//.exec(c)?.[1]));
  assert.deepEqual([...touched].sort(), [
    "svc0",
    "svc100",
    "svc150",
    "svc200",
    "svc250",
    "svc300",
    "svc350",
    "svc400",
    "svc450",
    "svc50",
    "svc500",
    "svc550",
  ]);
  const fresh = new FakeNft();
  fresh.apply(
    planFullSync(renderNftables({ state: changed, settings: SETTINGS }), null, { resetBaseChains: true })
      .payload,
  );
  const pending = new Set(restarted.pendingStaleChains.keys());
  const withoutStale = (dump: string) =>
    dump
      .split("\n")
      .filter((l) => !pending.has(/^add chain ip kube-proxy (\S+)$/.exec(l)?.[1] ?? ""))
      .join("\n");
  assert.equal(
    sortNFTablesDump(withoutStale(fake.dump("ip", "kube-proxy"))),
    sortNFTablesDump(fresh.dump("ip", "kube-proxy")),
  );
});
