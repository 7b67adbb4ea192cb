/**
 * Partial syncs are planned from the service ports whose objects changed. Element keys can be
 * held by several service ports (the ports of one Service share their ClusterIP; two Services
 * can share an external IP and port): when only some of them change, the element must follow
 * whichever port holds the key in the new table, exactly as a full sync of that state writes it.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import {
  servicePortKey,
  type Endpoint,
  type ProxyState,
  type ServicePort,
} from "../../../src/proxy/types.ts";
import { changedServiceNames } from "../../support/iptables-golden.ts";
import { endpoint, servicePort } from "../../support/iptables-builders.ts";
import { sortNFTablesDump } from "../../support/nftables-golden.ts";
import { fakeNftablesNode } from "../../support/nftables-writer.ts";

const SETTINGS = upstreamTestSettings("IPv4");

const port = (name: string, portName: string, port: number, externalIPs: string[] = []): ServicePort =>
  servicePort({ namespace: "ns", name, portName, port, clusterIP: `172.30.0.${name.length}`, externalIPs });

async function fullSyncDump(state: ProxyState): Promise<string> {
  const fresh = fakeNftablesNode(SETTINGS);
  await fresh.writer.write({
    state,
    fullSync: true,
    changedServices: new Set(),
    onTransaction: () => undefined,
  });
  return sortNFTablesDump(fresh.dump());
}

test("a key shared with a service port that did not change follows the table a full sync writes", async () => {
  const a = port("a", "http", 80, ["192.168.9.9"]);
  const b = port("a", "https", 443);
  // Another Service on the same external IP and port: its element shares a's key.
  const c = servicePort({
    namespace: "ns",
    name: "c",
    portName: "http",
    port: 80,
    clusterIP: "172.30.0.77",
    externalIPs: ["192.168.9.9"],
  });
  const eps = (ip: string): Endpoint[] => [endpoint(ip, 8080)];
  const steps: Array<Array<readonly [ServicePort, Endpoint[]]>> = [
    [
      [a, eps("10.0.0.1")],
      [b, eps("10.0.0.2")],
      [c, eps("10.0.0.3")],
    ],
    // Only one port of Service a changes: the ClusterIP in cluster-ips stays b's too.
    [
      [a, eps("10.0.0.4")],
      [b, eps("10.0.0.2")],
      [c, eps("10.0.0.3")],
    ],
    // a's http port goes: the ClusterIP stays for b, the external IP's entry is c's alone.
    [
      [b, eps("10.0.0.2")],
      [c, eps("10.0.0.3")],
    ],
    // It comes back, and c loses its endpoints.
    [
      [a, eps("10.0.0.5")],
      [b, eps("10.0.0.2")],
      [c, []],
    ],
    [[c, eps("10.0.0.6")]],
  ];
  const node = fakeNftablesNode(SETTINGS);
  let previous: ProxyState | null = null;
  const kept = new Map<string, readonly Endpoint[]>();
  const nodeLabels = {};
  for (const [i, entries] of steps.entries()) {
    // The same endpoint list object where it did not change, as the daemon's state store keeps it.
    const services = new Map<string, ServicePort>();
    const endpoints = new Map<string, readonly Endpoint[]>();
    for (const [sp, list] of entries) {
      const id = `${servicePortKey(sp.name)} ${list.map((e) => e.endpoint).join(",")}`;
      if (!kept.has(id)) kept.set(id, list);
      services.set(servicePortKey(sp.name), sp);
      if (list.length > 0) endpoints.set(servicePortKey(sp.name), kept.get(id)!);
    }
    const state: ProxyState = { family: "IPv4", services, endpoints, nodeLabels };
    await node.writer.write({
      state,
      fullSync: previous === null,
      changedServices: previous === null ? new Set() : changedServiceNames(previous, state),
      onTransaction: () => undefined,
    });
    previous = state;
    const stale = new Set(node.writer.pendingStaleChains.keys());
    const dump = node
      .dump()
      .split("\n")
      .filter((l) => {
        const m = /^add chain ip kube-proxy (\S+)$/.exec(l);
        return m === null || !stale.has(m[1]!);
      })
      .join("\n");
    assert.equal(sortNFTablesDump(dump), await fullSyncDump(state), `after step ${i + 1}`);
  }
});
