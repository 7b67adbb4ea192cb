/**
 * The proxier's way of writing a large sync (jump rules in front of the last transaction,
 * bounded chunks that ramp up, the capture rules swapped last, in-place edits and stale-chain
 * deletions on later syncs) must leave the real kernel exactly as upstream's single payload
 * does. Each step runs the real IptablesProxier against a namespace that also holds a foreign
 * chain and rule, and compares its tables with a fresh namespace given the jump rules and the
 * single payload of the same state.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import { JUMP_CHAINS } from "../../../src/backends/iptables/chains.ts";
import { iptablesProxier } from "../../../src/backends/iptables/proxier.ts";
import { renderIptables } from "../../../src/backends/iptables/render.ts";
import { Iptables, type IptablesBackend, type Table } from "../../../src/kernel/iptables.ts";
import { ProxyStateStore } from "../../../src/proxy/changetracker.ts";
import { realClock } from "../../../src/proxy/clock.ts";
import { ProxyHealth } from "../../../src/proxy/health.ts";
import { FAKE_PROXIER_SETTINGS } from "../../support/iptables-builders.ts";
import { ensureJumpRules } from "../../support/jumprules.ts";
import { numberedIP, numberedService, numberedSlice } from "../../support/numbered-services.ts";
import { runner, withNetns } from "../../support/netns.ts";

const service = numberedService;

/** Service n's slice with `endpoints` endpoints; a new `generation` gives them new addresses. */
const slice = (n: number, endpoints: number, generation = 0) =>
  numberedSlice(
    n,
    Array.from({ length: endpoints }, (_, e) => numberedIP(`10.${1 + e + generation}`, n)),
  );

/** Chains that only hold per-Service capture rules: their order carries no meaning. */
const CAPTURE_CHAINS = new Set(["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES"]);

/** A table as chain → rules; capture chains sorted, with the nodeport tail kept last. */
async function tableView(ipt: Iptables, table: Table): Promise<Record<string, string[]>> {
  const chains: Record<string, string[]> = {};
  for (const line of (await ipt.save(table)).split("\n")) {
    const declared = /^:(\S+) /.exec(line);
    if (declared?.[1] !== undefined) chains[declared[1]] ??= [];
    const rule = /^-A (\S+) (.*)$/.exec(line);
    if (rule?.[1] !== undefined && rule[2] !== undefined) (chains[rule[1]] ??= []).push(rule[2]);
  }
  for (const [name, rules] of Object.entries(chains)) {
    if (!CAPTURE_CHAINS.has(name)) continue;
    const isTail = (r: string) => r.includes("must be the last rule");
    const tail = rules.filter(isTail);
    const tailLast = tail.length === 0 || isTail(rules.at(-1) ?? "");
    chains[name] = [
      ...rules.filter((r) => !isTail(r)).sort(),
      ...(tailLast ? [] : ["(tail not last)"]),
      ...tail,
    ];
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

/** The kernel upstream's single payload of `store`'s state produces, next to the same foreign rules. */
async function expectedTables(backend: IptablesBackend, store: ProxyStateStore) {
  return withNetns(async (netns) => {
    const ipt = new Iptables({ runner, family: "IPv4", backend, netns });
    await addForeignRules(backend, netns);
    await ensureJumpRules(ipt, JUMP_CHAINS);
    const { payload } = renderIptables({
      state: store.state,
      settings: SETTINGS,
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
      const proxier = iptablesProxier({
        ipt,
        settings: SETTINGS,
        store,
        clock: realClock,
        log: pino({ level: "silent" }),
        health: new ProxyHealth(60_000, realClock),
        metrics: null,
        syncPeriodMs: 30_000,
        maxServicesPerTransaction: 100,
      });
      proxier.setInitialized();
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
      assert.ok((resync?.details?.nat.deletedChains.length ?? 0) >= 150 * 3, "the removed Services' chains are deleted");
      await compare("full resync after 150 Services went away");
    });
  });
}
