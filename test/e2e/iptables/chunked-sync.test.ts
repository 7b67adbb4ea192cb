/**
 * The proxier's way of writing a large sync (jump rules in front of the last transaction,
 * bounded chunks that ramp up, the capture rules swapped last, in-place edits and stale-chain
 * deletions on later syncs) must leave the real kernel exactly as upstream's single payload
 * does, rule for rule and in order. Each step runs the real IptablesProxier against a namespace that also holds a foreign
 * chain and rule, and compares its tables with a fresh namespace given the jump rules and the
 * single payload of the same state.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { JUMP_CHAINS } from "../../../src/backends/iptables/chains.ts";
import { renderIptables } from "../../../src/backends/iptables/render.ts";
import { Iptables, type IptablesBackend, type Table } from "../../../src/kernel/iptables.ts";
import type { IptablesSettings } from "../../../src/backends/iptables/types.ts";
import {
  CT_STATE_INVALID_DROPPED_PKTS,
  ensureNfacctCounter,
  LOCALHOST_NPS_ACCEPTED_PKTS,
  readNfacctCounters,
} from "../../../src/kernel/nfacct.ts";
import { ProxyStateStore } from "../../../src/proxy/changetracker.ts";
import { realClock } from "../../../src/proxy/clock.ts";
import { FAKE_PROXIER_SETTINGS } from "../../support/iptables-builders.ts";
import { ensureJumpRules } from "../../support/jumprules.ts";
import { numberedIP, numberedService, numberedSlice } from "../../support/numbered-services.ts";
import { runner, withNetns } from "../../support/netns.ts";
import { testProxier } from "../../support/proxier.ts";

const service = numberedService;

/** Service n's slice with `endpoints` endpoints; a new `generation` gives them new addresses. */
const slice = (n: number, endpoints: number, generation = 0) =>
  numberedSlice(
    n,
    Array.from({ length: endpoints }, (_, e) => numberedIP(`10.${1 + e + generation}`, n)),
  );

/** A table as chain → rules, each chain's rules in the kernel's order. */
async function tableView(ipt: Iptables, table: Table): Promise<Record<string, string[]>> {
  const chains: Record<string, string[]> = {};
  for (const line of (await ipt.save(table)).split("\n")) {
    const declared = /^:(\S+) /.exec(line);
    if (declared?.[1] !== undefined) chains[declared[1]] ??= [];
    const rule = /^-A (\S+) (.*)$/.exec(line);
    if (rule?.[1] !== undefined && rule[2] !== undefined) (chains[rule[1]] ??= []).push(rule[2]);
  }
  return chains;
}

/** A foreign component's chain and rule in the nat table, which no sync may touch. */
async function addForeignRules(backend: IptablesBackend, netns: string): Promise<void> {
  const tool = `iptables-${backend}`;
  await runner.run([tool, "-w", "5", "-t", "nat", "-N", "FOREIGN-CHAIN"], { netns, timeoutMs: 20_000 });
  await runner.run([tool, "-w", "5", "-t", "nat", "-A", "FOREIGN-CHAIN", "-d", "192.0.2.1", "-j", "RETURN"], {
    netns,
    timeoutMs: 20_000,
  });
  await runner.run([tool, "-w", "5", "-t", "nat", "-A", "PREROUTING", "-j", "FOREIGN-CHAIN"], {
    netns,
    timeoutMs: 20_000,
  });
}

/** The nfacct counters `settings` match on, created in `netns`. */
async function addCounters(settings: IptablesSettings, netns: string): Promise<void> {
  const names = [
    ...(settings.nfacct.ctStateInvalidDroppedPkts ? [CT_STATE_INVALID_DROPPED_PKTS] : []),
    ...(settings.nfacct.localhostNodePortsAcceptedPkts ? [LOCALHOST_NPS_ACCEPTED_PKTS] : []),
  ];
  for (const name of names) assert.ok(await ensureNfacctCounter(runner, name, { netns }), name);
}

/** The kernel upstream's single payload of `store`'s state produces, next to the same foreign rules. */
async function expectedTables(backend: IptablesBackend, store: ProxyStateStore, settings = SETTINGS) {
  return withNetns(async (netns) => {
    const ipt = new Iptables({ runner, family: "IPv4", backend, netns });
    await addForeignRules(backend, netns);
    await addCounters(settings, netns);
    await ensureJumpRules(ipt, JUMP_CHAINS);
    const { payload } = renderIptables({
      state: store.state,
      settings,
      fullSync: true,
      changedServices: new Set(),
      existingNatChains: [],
    });
    await ipt.restore(payload, { noflush: true, counters: true });
    return { nat: await tableView(ipt, "nat"), filter: await tableView(ipt, "filter") };
  });
}

const SERVICES = 420;

/** Upstream's test settings without the nfacct counters, which this namespace does not have. */
const SETTINGS = {
  ...FAKE_PROXIER_SETTINGS,
  nfacct: { ctStateInvalidDroppedPkts: false, localhostNodePortsAcceptedPkts: false },
};

for (const backend of ["nft", "legacy"] as const) {
  test(`${backend}: a chunked sync, its partial syncs and a chunked resync leave the kernel as upstream's single payload`, async () => {
    await withNetns(async (netns) => {
      const ipt = new Iptables({ runner, family: "IPv4", backend, netns });
      await addForeignRules(backend, netns);
      const store = new ProxyStateStore({ family: "IPv4", nodeName: FAKE_PROXIER_SETTINGS.nodeName });
      for (let n = 0; n < SERVICES; n++) {
        store.serviceChanges.update(null, service(n));
        store.endpointsChanges.endpointSliceUpdate(slice(n, 2), false);
      }
      const proxier = testProxier({
        ipt,
        store,
        settings: SETTINGS,
        clock: realClock,
        maxServicesPerTransaction: 100,
      });
      const compare = async (step: string) => {
        const expected = await expectedTables(backend, store);
        assert.deepEqual(await tableView(ipt, "nat"), expected.nat, `${step}: nat`);
        assert.deepEqual(await tableView(ipt, "filter"), expected.filter, `${step}: filter`);
      };

      const first = await proxier.syncProxyRules();
      assert.equal(first?.fullSync, true);
      assert.equal(first?.transactions, 6, "chunks of 50, 100, 100, 100, 70, then the top level");
      await compare("first full sync");

      store.endpointsChanges.endpointSliceUpdate(slice(7, 3, 5), false);
      store.serviceChanges.update(service(8), null);
      store.endpointsChanges.endpointSliceUpdate(slice(8, 2), true);
      store.serviceChanges.update(null, service(SERVICES));
      store.endpointsChanges.endpointSliceUpdate(slice(SERVICES, 1), false);
      const partial = await proxier.syncProxyRules();
      assert.equal(partial?.fullSync, false);
      assert.equal(partial?.transactions, 1);
      await compare("partial sync: one endpoint change, one Service deleted, one added");

      for (let n = 100; n < 250; n++) {
        store.serviceChanges.update(service(n), null);
        store.endpointsChanges.endpointSliceUpdate(slice(n, 2), true);
      }
      proxier.forceFullSync();
      const resync = await proxier.syncProxyRules();
      assert.equal(resync?.fullSync, true);
      assert.ok(
        (resync?.details?.nat.deletedChains.length ?? 0) >= 150 * 3,
        "the removed Services' chains are deleted",
      );
      await compare("full resync after 150 Services went away");
    });
  });
}

/** Service `ns/svc<n>` as a NodePort Service (nodePort 30000 + n). */
const nodePortService = (n: number) => service(n, 30000 + n);

/** Packets counted by the localhost NodePort nfacct counter of `netns`. */
async function localhostNodePortPackets(netns: string): Promise<bigint> {
  const counters = await readNfacctCounters(runner, { netns });
  assert.ok(counters !== null, "nfacct list");
  return counters.find((c) => c.name === LOCALHOST_NPS_ACCEPTED_PKTS)?.packets ?? 0n;
}

for (const backend of ["nft", "legacy"] as const) {
  test(`${backend}: a NodePort Service deleted and added again by partial syncs keeps upstream's rule order, and localhost traffic is counted`, async () => {
    await withNetns(async (netns) => {
      const settings = FAKE_PROXIER_SETTINGS;
      const ipt = new Iptables({ runner, family: "IPv4", backend, netns });
      await addForeignRules(backend, netns);
      await addCounters(settings, netns);
      const store = new ProxyStateStore({ family: "IPv4", nodeName: settings.nodeName });
      for (let n = 1; n <= 4; n++) {
        store.serviceChanges.update(null, nodePortService(n));
        store.endpointsChanges.endpointSliceUpdate(slice(n, 2), false);
      }
      const proxier = testProxier({ ipt, store, settings, clock: realClock });
      const compare = async (step: string) => {
        const expected = await expectedTables(backend, store, settings);
        assert.deepEqual(await tableView(ipt, "nat"), expected.nat, `${step}: nat`);
        assert.deepEqual(await tableView(ipt, "filter"), expected.filter, `${step}: filter`);
      };
      assert.equal((await proxier.syncProxyRules())?.fullSync, true);
      await compare("first full sync");

      store.serviceChanges.update(nodePortService(2), null);
      assert.equal((await proxier.syncProxyRules())?.fullSync, false);
      await compare("NodePort Service deleted");
      store.serviceChanges.update(null, nodePortService(2));
      assert.equal((await proxier.syncProxyRules())?.fullSync, false);
      await compare("NodePort Service added again");

      // nat OUTPUT → KUBE-SERVICES → the tail → KUBE-NODEPORTS: the localhost rule must match first.
      const before = await localhostNodePortPackets(netns);
      await runner
        .run(["curl", "-sS", "--max-time", "1", "http://127.0.0.1:30002/"], { netns, timeoutMs: 5_000 })
        .catch(() => undefined);
      assert.ok((await localhostNodePortPackets(netns)) > before, "localhost_nps_accepted_pkts counted");
    });
  });
}

for (const backend of ["nft", "legacy"] as const) {
  test(`${backend}: after an external \`iptables -t nat -F; -X\` the next partial sync fails, and the full one after it repairs`, async () => {
    await withNetns(async (netns) => {
      const ipt = new Iptables({ runner, family: "IPv4", backend, netns });
      await addForeignRules(backend, netns);
      const store = new ProxyStateStore({ family: "IPv4", nodeName: FAKE_PROXIER_SETTINGS.nodeName });
      for (let n = 0; n < 3; n++) {
        store.serviceChanges.update(null, service(n));
        store.endpointsChanges.endpointSliceUpdate(slice(n, 2), false);
      }
      const proxier = testProxier({ ipt, store, settings: SETTINGS, clock: realClock });
      await proxier.syncProxyRules();
      for (const op of ["-F", "-X"]) {
        await runner.run([`iptables-${backend}`, "-w", "5", "-t", "nat", op], { netns, timeoutMs: 20_000 });
      }
      await addForeignRules(backend, netns); // their owner puts them back
      store.endpointsChanges.endpointSliceUpdate(slice(1, 3, 5), false);
      await assert.rejects(proxier.syncProxyRules(), /KUBE-PROXY-PROBE|KUBE-SERVICES/);
      assert.doesNotMatch(await ipt.save("nat"), /KUBE-/, "the failed partial sync wrote nothing");
      const repair = await proxier.syncProxyRules();
      assert.equal(repair?.fullSync, true);
      const expected = await expectedTables(backend, store);
      assert.deepEqual(await tableView(ipt, "nat"), expected.nat, "nat");
      assert.deepEqual(await tableView(ipt, "filter"), expected.filter, "filter");
    });
  });
}
