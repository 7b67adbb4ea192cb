/**
 * Traffic to an unchanged Service keeps flowing while the netlink writer resyncs the whole table
 * in bounded transactions: the seed's nginx Service plus 1,000 other Services × 5 endpoints,
 * 50 Services per transaction; a client loop in a pod namespace sends requests to the ClusterIP
 * during repeated forced full resyncs, and none of them fails.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import {
  NetlinkNftablesKernel,
  readTableOverNetlink,
} from "../../../src/backends/nftables/netlink-kernel.ts";
import { NftablesWriter } from "../../../src/backends/nftables/proxier.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import type { NftablesSettings } from "../../../src/backends/nftables/types.ts";
import { realClock } from "../../../src/proxy/clock.ts";
import type { Endpoint, ServicePort } from "../../../src/proxy/types.ts";
import { probe, probeHttp } from "../../../src/sandbox/client.ts";
import { buildSeedTopology, SEED } from "../../../src/sandbox/seed.ts";
import { Sandbox } from "../../../src/sandbox/topology.ts";
import { endpoint, proxyState, servicePort } from "../../support/iptables-builders.ts";

const FILLER = 1_000;
const PER_TRANSACTION = 50;
const REQUESTS = 3_000;

test("traffic to an unchanged Service keeps flowing during a chunked full resync", async () => {
  await using sandbox = await Sandbox.create({ prefix: "kptzd" });
  const topology = await buildSeedTopology(sandbox);
  const netns = topology.node.netns;
  const settings: NftablesSettings = {
    ...upstreamTestSettings("IPv4"),
    nodeName: SEED.node.name,
    nodeIP: SEED.node.ipv4,
    localDetector: { mode: "ClusterCIDR", cidr: SEED.node.podCIDR },
    nodePortAddresses: [`${SEED.node.ipv4}/32`],
    localAddresses: [SEED.node.ipv4],
    serviceCIDRs: [],
  };
  const entries: Array<[ServicePort, Endpoint[]]> = [
    [
      servicePort({
        namespace: SEED.namespace,
        name: SEED.service,
        clusterIP: SEED.clusterIP,
        port: SEED.port,
      }),
      topology.pods.map((p) => endpoint(p.ipv4, SEED.targetPort, { isLocal: true })),
    ],
  ];
  for (let i = 0; i < FILLER; i++) {
    const eps: Endpoint[] = [];
    for (let j = 0; j < 5; j++) eps.push(endpoint(`10.200.${(i * 5 + j) >> 8}.${(i * 5 + j) & 255}`, 8080));
    entries.push([
      servicePort({ namespace: "filler", name: `svc${i}`, clusterIP: `172.20.${i >> 8}.${i & 255}` }),
      eps,
    ]);
  }
  const state = proxyState(entries);
  const kernel = new NetlinkNftablesKernel({ family: "ip", netns });
  const writer = new NftablesWriter({
    kernel: { apply: (t) => kernel.apply(t), read: () => readTableOverNetlink({ family: "ip", netns }) },
    settings,
    clock: realClock,
    log: pino({ level: "silent" }),
    servicesPerTransaction: PER_TRANSACTION,
  });
  const request = { state, changedServices: new Set<string>(), onTransaction: () => undefined };
  try {
    await writer.write({ ...request, fullSync: true });
    const client = topology.pods[0]!.name;
    const warm = await probeHttp(sandbox, client, { host: SEED.clusterIP, port: SEED.port, count: 3 });
    assert.deepEqual(warm.errors, {}, "the Service answers before the resyncs");

    let probing = true;
    // The probe sends at most 1,000 requests per step: three steps back to back, one process.
    const step = {
      protocol: "tcp",
      host: SEED.clusterIP,
      port: SEED.port,
      count: REQUESTS / 3,
      timeoutMs: 2_000,
    } as const;
    const traffic = probe(sandbox, client, [step, step, step]).finally(() => {
      probing = false;
    });
    let resyncsDuringTraffic = 0;
    for (let i = 0; i < 20 && probing; i++) {
      const outcome = await writer.write({ ...request, fullSync: true });
      assert.equal(outcome.details.fullSync, true);
      if (probing) resyncsDuringTraffic++;
    }
    const reports = await traffic;
    assert.ok(resyncsDuringTraffic >= 1, "at least one chunked full resync ran while the client sent");
    for (const report of reports) assert.deepEqual(report.errors, {}, "no request failed");
    assert.equal(
      reports.reduce((n, r) => n + r.results.length, 0),
      REQUESTS,
      "every request was answered",
    );
  } finally {
    kernel.close();
  }
});
