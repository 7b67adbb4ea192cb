import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { probe } from "../../../src/sandbox/client.ts";
import type { Sandbox } from "../../../src/sandbox/topology.ts";
import {
  disposeProxyNode,
  endpointSlice,
  nodeObject,
  ProxyDaemon,
  service,
  startProxyNode,
} from "../../support/daemon.ts";

/*
 * Someone flushes and deletes one table's chains under the running daemon (`iptables -t nat -F;
 * iptables -t nat -X`, as a hand-run cleanup or another tool does) while nothing changes in the
 * cluster. The daemon must notice within one sync period (the canary monitor polls every table
 * at that interval) and put everything back with a full sync, jump rules included; a Service
 * must answer again.
 */

const NODE = "node-1";
const NODE_IP = "192.168.50.1";
const CLIENT = "client";
const VIP = "10.1.0.80";
const PODS = { "web-a": "10.244.0.30", "web-b": "10.244.0.31" } as const;
const SYNC_PERIOD_MS = 3_000;
/** After the period: the canary wait (500 ms, when other tables' canaries stay) and a full sync. */
const REPAIR_MARGIN_MS = 2_000;

describe("an external flush of a table is repaired within one sync period", () => {
  let sandbox: Sandbox;
  let daemon: ProxyDaemon;

  before(async () => {
    sandbox = await startProxyNode("kptpxflush", {
      node: { name: NODE, ipv4: NODE_IP, podCIDR: "10.244.0.0/24", defaultGateways: ["192.168.50.254"] },
      client: { name: CLIENT, ipv4: "192.168.50.2", routes: ["10.1.0.0/16"] },
      pods: PODS,
      podServer: { udpPort: null, readyTimeoutMs: 30_000 },
    });
    daemon = await ProxyDaemon.start(sandbox, {
      node: NODE,
      args: ["--cluster-cidr", "10.244.0.0/16", "--iptables-sync-period", `${SYNC_PERIOD_MS / 1000}s`],
      manifests: {
        "node.yaml": nodeObject({ name: NODE, ips: [NODE_IP], podCIDRs: ["10.244.0.0/24"] }),
        "web.yaml": [
          service({ name: "web", clusterIP: VIP, ports: [{ name: "http", port: 80 }] }),
          endpointSlice({
            service: "web",
            endpoints: Object.entries(PODS).map(([pod, ip]) => ({ ip, node: NODE, pod })),
            ports: [{ name: "http", port: 80 }],
          }),
        ],
      },
    });
  });

  after(() => disposeProxyNode(daemon, sandbox));

  const served = async (count: number) => {
    const [report] = await probe(sandbox, CLIENT, [
      { protocol: "tcp", host: VIP, port: 80, count, timeoutMs: 2_000 },
    ]);
    return report;
  };

  /** Flushes and deletes `table`'s chains in the node, then waits for the daemon's repair. */
  async function flushAndAwaitRepair(table: "nat" | "filter", repaired: (save: string) => boolean) {
    const intact = await daemon.save("IPv4");
    assert.ok(repaired(intact), `the check holds before the flush\n${intact}`);
    await sandbox.exec(NODE, ["iptables", "-t", table, "-F"]);
    await sandbox.exec(NODE, ["iptables", "-t", table, "-X"]);
    const flushedAt = Date.now();
    const broken = await daemon.save("IPv4", table);
    assert.doesNotMatch(broken, /KUBE-/, `the ${table} table was flushed`);
    const save = await daemon.waitForRules(`the ${table} table to be repaired`, repaired, {
      timeoutMs: SYNC_PERIOD_MS + REPAIR_MARGIN_MS,
    });
    const elapsedMs = Date.now() - flushedAt;
    assert.ok(/:KUBE-PROXY-CANARY/.test(save.split(`*${table}`)[1] ?? ""), "the canary is back");
    return elapsedMs;
  }

  it("nat: chains, capture rules and jump rules come back, and the Service answers again", async (t) => {
    assert.deepEqual((await served(3))?.errors, {}, "the Service answers before the flush");
    const elapsedMs = await flushAndAwaitRepair(
      "nat",
      (save) =>
        /^-A PREROUTING .*-j KUBE-SERVICES$/m.test(save) &&
        /^-A OUTPUT .*-j KUBE-SERVICES$/m.test(save) &&
        /^-A POSTROUTING .*-j KUBE-POSTROUTING$/m.test(save) &&
        new RegExp(`^-A KUBE-SERVICES -d ${VIP}/32 .*-j KUBE-SVC-`, "m").test(save) &&
        /-j DNAT --to-destination 10\.244\.0\.31:80$/m.test(save),
    );
    const report = await served(5);
    assert.deepEqual(report?.errors, {}, `${JSON.stringify(report?.results)}${daemon.logTail(15)}`);
    t.diagnostic(`repaired ${elapsedMs} ms after the flush (sync period ${SYNC_PERIOD_MS} ms)`);
  });

  it("filter: the kube chains and their jump rules come back", async (t) => {
    const elapsedMs = await flushAndAwaitRepair(
      "filter",
      (save) =>
        /^-A INPUT .*-j KUBE-FIREWALL$/m.test(save) &&
        /^-A FORWARD .*-j KUBE-FORWARD$/m.test(save) &&
        /^-A KUBE-FORWARD .*-j ACCEPT$/m.test(save),
    );
    assert.deepEqual((await served(3))?.errors, {});
    t.diagnostic(`repaired ${elapsedMs} ms after the flush (sync period ${SYNC_PERIOD_MS} ms)`);
  });
});
