import assert from "node:assert/strict";
import { test } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import { JUMP_CHAINS } from "../../../src/backends/iptables/chains.ts";
import { renderIptables } from "../../../src/backends/iptables/render.ts";
import { restoreTransactions } from "../../support/transactions.ts";
import { FakeIptables } from "../../../src/kernel/fake.ts";
import type { RestoreOptions, RestorePayload, SaveOptions, Table } from "../../../src/kernel/iptables.ts";
import { ensureJumpRules } from "../../support/jumprules.ts";
import { ProxyStateStore } from "../../../src/proxy/changetracker.ts";
import { FAKE_PROXIER_SETTINGS } from "../../support/iptables-builders.ts";
import { numberedService, numberedSlice } from "../../support/numbered-services.ts";
import { testProxier } from "../../support/proxier.ts";

const service = numberedService;
const slice = numberedSlice;

function setup(services: number, maxServicesPerTransaction?: number, ipt = new FakeIptables()) {
  const store = new ProxyStateStore({ family: "IPv4", nodeName: FAKE_PROXIER_SETTINGS.nodeName });
  for (let n = 1; n <= services; n++) {
    store.serviceChanges.update(null, service(n));
    store.endpointsChanges.endpointSliceUpdate(slice(n, [`10.0.${n}.1`, `10.0.${n}.2`]), false);
  }
  return { ipt, store, proxier: testProxier({ ipt, store, maxServicesPerTransaction }) };
}

/** The nat table (or every table) a single full-sync payload of `store`'s state produces on a fresh fake. */
async function fullSyncKernel(store: ProxyStateStore, tables: "nat" | "all" = "nat"): Promise<string> {
  const fresh = new FakeIptables();
  await ensureJumpRules(fresh, JUMP_CHAINS);
  const result = renderIptables({
    state: store.state,
    settings: FAKE_PROXIER_SETTINGS,
    fullSync: true,
    changedServices: new Set(),
    existingNatChains: [],
  });
  await fresh.restore(result.payload, { noflush: true, counters: true });
  return fresh.save(tables === "nat" ? "nat" : undefined);
}

/** Leading sections that only add jump rules from built-in chains (and declare their targets). */
const JUMP_SECTION =
  /^\*(?:filter|nat)\n(?::KUBE-[A-Z-]+ - \[0:0\]\n)*(?:-I (?:INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) 1 .*\n)+COMMIT\n/;

function withoutJumpSections(payload: string): string {
  let rest = payload;
  for (let m = JUMP_SECTION.exec(rest); m !== null; m = JUMP_SECTION.exec(rest))
    rest = rest.slice(m[0].length);
  return rest;
}

/** The sync's own restores, without the jump-rule sections a full sync puts in front of its top-level one. */
const restores = (ipt: FakeIptables) =>
  ipt.calls.filter((c) => c.op === "restore").map((c) => withoutJumpSections(c.payload ?? ""));
/** Reads of the kernel's tables (the stale-chain listing and the jump rules share one). */
const saves = (ipt: FakeIptables) => ipt.calls.filter((c) => c.op === "save").length;

test("first sync: jump rules ensured, then upstream's single payload", async () => {
  const { ipt, store, proxier } = setup(3);
  const report = await proxier.syncProxyRules();
  assert.equal(report?.fullSync, true);
  const expected = renderIptables({
    state: store.state,
    settings: FAKE_PROXIER_SETTINGS,
    fullSync: true,
    changedServices: new Set(),
    existingNatChains: [],
  }).payload;
  assert.deepEqual(restores(ipt), [expected]);
  const [first] = ipt.calls.filter((c) => c.op === "restore").map((c) => c.payload ?? "");
  assert.match(
    first ?? "",
    /^\*filter\n[^*]*-I INPUT 1 [^*]*COMMIT\n\*nat\n[^*]*-I PREROUTING 1 /,
    "jump rules first",
  );
  assert.equal(ipt.rules("nat", "PREROUTING").length, 1, "nat PREROUTING jumps to KUBE-SERVICES");
  assert.equal(
    saves(ipt),
    1,
    "the first sync reads the kernel once, for the stale chains and the jump rules",
  );
});

test("an endpoint change writes only that Service's chains and needs no iptables-save", async () => {
  const { ipt, store, proxier } = setup(3);
  await proxier.syncProxyRules();
  ipt.calls.length = 0;
  store.endpointsChanges.endpointSliceUpdate(slice(2, ["10.0.2.1", "10.0.2.9"]), false);
  const report = await proxier.syncProxyRules();
  assert.equal(report?.fullSync, false);
  const [payload, ...rest] = restores(ipt);
  assert.equal(rest.length, 0);
  assert.ok(payload !== undefined && !payload.includes("*filter"), "filter unchanged: not rewritten");
  assert.doesNotMatch(
    payload,
    /^(?::KUBE-SERVICES|-[AID] KUBE-SERVICES) /m,
    "capture rules unchanged: not rewritten",
  );
  assert.match(payload, /^-X KUBE-SEP-/m, "the removed endpoint's chain is deleted");
  assert.match(payload, /--to-destination 10\.0\.2\.9:8080/);
  assert.doesNotMatch(payload, /10\.0\.[13]\./, "other Services untouched");
  assert.equal(saves(ipt), 0);
  assert.equal(await ipt.save("nat"), await fullSyncKernel(store), "same kernel state as a full sync");
});

test("deleting a Service rewrites the capture rules and deletes its chains from the known set", async () => {
  const { ipt, store, proxier } = setup(3);
  await proxier.syncProxyRules();
  ipt.calls.length = 0;
  store.serviceChanges.update(service(3), null);
  store.endpointsChanges.endpointSliceUpdate(slice(3, ["10.0.3.1", "10.0.3.2"]), true);
  await proxier.syncProxyRules();
  const [payload] = restores(ipt);
  assert.match(payload ?? "", /^-X KUBE-SVC-/m);
  assert.equal(saves(ipt), 0);
  assert.equal(await ipt.save("nat"), await fullSyncKernel(store));
  assert.ok(![...(proxier.writer.natChainsInKernel ?? [])].some((c) => (payload ?? "").includes(`-X ${c}`)));
});

test("a flush seen by the canary forces a full sync that lists the kernel again", async () => {
  const { ipt, proxier } = setup(2);
  await proxier.syncProxyRules();
  ipt.calls.length = 0;
  proxier.forceFullSync();
  const report = await proxier.syncProxyRules();
  assert.equal(report?.fullSync, true);
  assert.match(restores(ipt)[0] ?? "", /^\*filter/);
  // One for the drift check against what the last sync wrote, one for the sync's own listing.
  assert.equal(saves(ipt), 2);
});

test("a failed restore keeps the kernel as it was and makes the next sync full", async () => {
  const { ipt, store, proxier } = setup(2);
  await proxier.syncProxyRules();
  const before = await ipt.save();
  store.endpointsChanges.endpointSliceUpdate(slice(1, ["10.0.1.7"]), false);
  ipt.failNextRestoreAtLine = 2;
  await assert.rejects(proxier.syncProxyRules());
  assert.equal(await ipt.save(), before, "nothing of the failed transaction reached the kernel");
  ipt.calls.length = 0;
  const report = await proxier.syncProxyRules();
  assert.equal(report?.fullSync, true);
  assert.equal(saves(ipt), 1, "after a failure the kernel's chains are listed again");
  assert.equal(await ipt.save("nat"), await fullSyncKernel(store));
});

test("a large sync is split into bounded transactions with the same end state", async () => {
  const { ipt, store, proxier } = setup(5, 2);
  await proxier.syncProxyRules();
  const payloads = restores(ipt);
  assert.equal(payloads.length, 4, "3 chunks of at most 2 Services, then the top-level transaction");
  for (const chunk of payloads.slice(0, 3)) {
    assert.doesNotMatch(chunk, /-A KUBE-SERVICES/, "capture rules only change in the last transaction");
  }
  assert.match(payloads[3] ?? "", /^\*filter[\s\S]*-A KUBE-SERVICES/m);
  assert.equal(await ipt.save("nat"), await fullSyncKernel(store));
});

/** A fake kernel whose restores take a few event-loop turns, like a real iptables-restore process. */
class SlowIptables extends FakeIptables {
  inFlight = 0;
  maxInFlight = 0;
  restoresStarted = 0;
  /** 1-based number of the restore call that fails (at its first line). */
  failRestoreNumber: number | null = null;
  /** Restores and saves in the order they were started. */
  readonly started: ("restore" | "save")[] = [];

  override save(table?: Table, options?: SaveOptions): Promise<string> {
    this.started.push("save");
    return super.save(table, options);
  }

  override async restore(payload: RestorePayload, options?: RestoreOptions): Promise<void> {
    this.started.push("restore");
    this.restoresStarted++;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      for (let i = 0; i < 5; i++) await nextTurn();
      if (this.restoresStarted === this.failRestoreNumber) this.failNextRestoreAtLine = 1;
      await super.restore(payload, options);
    } finally {
      this.inFlight--;
    }
  }
}

test("a chunked sync renders while the kernel applies: one restore at a time, in order, same transactions", async () => {
  const ipt = new SlowIptables();
  const { store, proxier } = setup(40, 3, ipt);
  const report = await proxier.syncProxyRules();
  const expected = restoreTransactions(
    renderIptables({
      state: store.state,
      settings: FAKE_PROXIER_SETTINGS,
      fullSync: true,
      changedServices: new Set(),
      existingNatChains: [],
    }),
    3,
  );
  assert.equal(ipt.maxInFlight, 1, "never two restores at once");
  assert.deepEqual(restores(ipt), expected);
  assert.equal(report?.transactions, expected.length);
  assert.equal(await ipt.save("nat"), await fullSyncKernel(store));
});

/** KUBE-SERVICES' capture rules in the fake kernel. */
const captureRules = async (ipt: FakeIptables) =>
  (await ipt.save("nat")).split("\n").filter((l) => l.startsWith("-A KUBE-SERVICES"));

/** A slow fake kernel after one full sync of 5 Services in chunks of 2; the next sync is forced full. */
async function syncedThenForcedFull() {
  const ipt = new SlowIptables();
  const { store, proxier } = setup(5, 2, ipt);
  await proxier.syncProxyRules();
  ipt.calls.length = 0;
  proxier.forceFullSync();
  return { ipt, store, proxier, servicesBefore: await captureRules(ipt) };
}

test("a restore failing in the middle of a chunked sync stops it before the capture rules change", async () => {
  const { ipt, store, proxier, servicesBefore } = await syncedThenForcedFull();
  store.endpointsChanges.endpointSliceUpdate(slice(5, ["10.0.5.7"]), false);
  ipt.failRestoreNumber = ipt.restoresStarted + 2; // the second chunk (the jump rules are in place)
  await assert.rejects(proxier.syncProxyRules(), /line 1/);
  assert.equal(restores(ipt).length, 2, "the first chunk, the failed second one, nothing after it");
  assert.deepEqual(await captureRules(ipt), servicesBefore, "capture rules untouched");
  assert.equal(ipt.inFlight, 0, "the sync returned only after its restore finished");
  const report = await proxier.syncProxyRules();
  assert.equal(report?.fullSync, true);
  assert.equal(await ipt.save("nat"), await fullSyncKernel(store));
});

test("a chunked sync sends its first chunk before reading the kernel; a single payload reads first", async () => {
  const chunked = new SlowIptables();
  await setup(5, 2, chunked).proxier.syncProxyRules();
  assert.deepEqual(chunked.started, ["restore", "save", "restore", "restore", "restore"]);
  const single = new SlowIptables();
  await setup(2, 2, single).proxier.syncProxyRules();
  assert.deepEqual(single.started, ["save", "restore"]);
});

test("the jump rules travel with the last transaction, beside the capture rules they lead to", async () => {
  const ipt = new SlowIptables();
  const { proxier } = setup(5, 2, ipt);
  ipt.failRestoreNumber = 4; // 3 chunks of at most 2 Services, then the top level
  await assert.rejects(proxier.syncProxyRules(), /line 1/);
  const payloads = ipt.calls.filter((c) => c.op === "restore").map((c) => c.payload ?? "");
  assert.equal(payloads.length, 4);
  for (const chunk of payloads.slice(0, 3)) assert.doesNotMatch(chunk, /-I PREROUTING/);
  assert.match(payloads[3] ?? "", /-I PREROUTING 1 [\s\S]*-A KUBE-SERVICES /);
  assert.equal(ipt.inFlight, 0);
  assert.deepEqual(
    ipt.rules("nat", "PREROUTING"),
    [],
    "no jump into chains the failed transaction would have filled",
  );
  assert.match(await ipt.save("nat"), /KUBE-SVC-/, "the chunks before it were applied");
  assert.doesNotMatch(await ipt.save("nat"), /-A KUBE-SERVICES /);
});

test("a render error in the middle of a chunked sync waits for the restore in flight and writes nothing more", async () => {
  const { ipt, store, proxier, servicesBefore } = await syncedThenForcedFull();
  const apply = store.applyPending.bind(store);
  store.applyPending = () => {
    const result = apply();
    const endpoints = new Map(result.state.endpoints);
    const key = [...endpoints.keys()].find((k) => k.includes("svc5"));
    const [first] = key === undefined ? [] : (endpoints.get(key) ?? []);
    assert.ok(key !== undefined && first !== undefined);
    endpoints.set(key, [{ ...first, ip: '10.0.5.1" -j ACCEPT' }]);
    return { ...result, state: { ...result.state, endpoints } };
  };
  await assert.rejects(proxier.syncProxyRules(), { code: "KPT_RENDER_INPUT" });
  assert.equal(ipt.inFlight, 0, "the chunk in flight finished before the sync reported the error");
  assert.ok(restores(ipt).length <= 2, "at most the chunks rendered before the bad Service");
  for (const payload of restores(ipt)) assert.doesNotMatch(payload, /-A KUBE-SERVICES|-X /);
  assert.deepEqual(await captureRules(ipt), servicesBefore, "capture rules untouched");
});

test("a sync with nothing changed writes nothing", async () => {
  const { ipt, proxier } = setup(2);
  await proxier.syncProxyRules();
  ipt.calls.length = 0;
  const report = await proxier.syncProxyRules();
  assert.equal(report?.transactions, 0);
  assert.deepEqual(restores(ipt), []);
});

test("adding a Service inserts its capture rule at its place, above the nodeport tail, instead of rewriting the chain", async () => {
  const { ipt, store, proxier } = setup(3);
  await proxier.syncProxyRules();
  ipt.calls.length = 0;
  store.serviceChanges.update(null, service(4));
  store.endpointsChanges.endpointSliceUpdate(slice(4, ["10.0.4.1"]), false);
  await proxier.syncProxyRules();
  const [payload, ...rest] = restores(ipt);
  assert.equal(rest.length, 0);
  assert.match(payload ?? "", /^-I KUBE-SERVICES 4 -m comment --comment "ns\/svc4:p80 cluster IP"/m);
  assert.doesNotMatch(payload ?? "", /^:KUBE-SERVICES/m, "the chain is not flushed");
  const kernel = await ipt.save("nat");
  const services = kernel.split("\n").filter((l) => l.startsWith("-A KUBE-SERVICES "));
  assert.match(services.at(-1) ?? "", /must be the last rule/, "the nodeport tail stays last");
  assert.equal(kernel, await fullSyncKernel(store));
});

test("a Service losing its endpoints swaps its capture rule for a filter REJECT in place", async () => {
  const { ipt, store, proxier } = setup(2);
  await proxier.syncProxyRules();
  ipt.calls.length = 0;
  store.endpointsChanges.endpointSliceUpdate(slice(2, []), false);
  await proxier.syncProxyRules();
  const [payload] = restores(ipt);
  assert.match(payload ?? "", /^\*filter\n-A KUBE-SERVICES .*has no endpoints.* -j REJECT$/m);
  assert.match(payload ?? "", /^-D KUBE-SERVICES -m comment --comment "ns\/svc2:p80 cluster IP"/m);
  assert.equal(await ipt.save("nat"), await fullSyncKernel(store));
  assert.equal(
    (await ipt.save("filter")).split("\n").filter((l) => l.includes("has no endpoints")).length,
    1,
  );
});

/** KUBE-NODEPORTS in the fake kernel, each rule as the kind it is. */
const nodePortsChain = (ipt: FakeIptables) =>
  ipt.rules("nat", "KUBE-NODEPORTS").map((r) => (r.includes("127.0.0.0/8") ? "localhost" : "general"));

test("a NodePort Service deleted and added again keeps its localhost (nfacct) rule above the general one", async () => {
  const { ipt, store, proxier } = setup(0);
  for (const n of [1, 2]) {
    store.serviceChanges.update(null, service(n, 30000 + n));
    store.endpointsChanges.endpointSliceUpdate(slice(n, [`10.0.${n}.1`]), false);
  }
  await proxier.syncProxyRules();
  assert.deepEqual(nodePortsChain(ipt), ["localhost", "general", "localhost", "general"]);
  store.serviceChanges.update(service(2, 30002), null);
  await proxier.syncProxyRules();
  store.serviceChanges.update(null, service(2, 30002));
  const report = await proxier.syncProxyRules();
  assert.equal(report?.fullSync, false);
  assert.deepEqual(nodePortsChain(ipt), ["localhost", "general", "localhost", "general"]);
  assert.equal(await ipt.save(), await fullSyncKernel(store, "all"));
});

test("an external `iptables -t nat -F; -X` fails the next partial sync, and the one after repairs the kernel", async () => {
  const { ipt, store, proxier } = setup(3);
  await proxier.syncProxyRules();
  await ipt.restore("*nat\nCOMMIT\n", { noflush: false });
  store.endpointsChanges.endpointSliceUpdate(slice(2, ["10.0.2.1", "10.0.2.9"]), false);
  await assert.rejects(proxier.syncProxyRules(), /KUBE-SERVICES/);
  assert.deepEqual(ipt.rules("nat", "PREROUTING"), [], "the failed sync wrote nothing");
  const report = await proxier.syncProxyRules();
  assert.equal(report?.fullSync, true);
  assert.equal(await ipt.save(), await fullSyncKernel(store, "all"), "jump rules and chains are back");
});
