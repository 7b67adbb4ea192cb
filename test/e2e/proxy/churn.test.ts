import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { nodeManifest, WEB, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { endpointSlice, metricValue, service, sleep } from "../../support/daemon.ts";
import type { EndpointSpec } from "../../support/daemon.ts";
import { TRAFFIC_MODES } from "../../support/service-matrix.ts";
import { TrafficClient } from "../../support/traffic.ts";

/*
 * Endpoints changing under live traffic: a UDP client that keeps one source port must follow
 * its Service to the new endpoint (the daemon deletes the stale conntrack entry, docs/iptables.md §5.6), and
 * HTTP load must see no failure while an extra endpoint comes and goes. Each case runs in
 * iptables mode and in nftables mode (the conntrack clean-up is the same in both, as upstream).
 */

const NODE = WEB.node;
const CLIENT = WEB.client;
const PODS = {
  "udp-a": "10.244.0.20",
  "udp-b": "10.244.0.21",
  "web-a": "10.244.0.30",
  "web-b": "10.244.0.31",
  "web-c": "10.244.0.32",
} as const;
type PodName = keyof typeof PODS;

const UDP_VIP = "10.1.0.53";
const UDP_PORT = 5353;
const WEB_VIP = "10.1.0.80";

const ep = (pod: PodName): EndpointSpec => ({ ip: PODS[pod], node: NODE, pod });
const udpSlice = (pod: PodName) =>
  endpointSlice({ service: "dns", endpoints: [ep(pod)], ports: [{ port: 80, protocol: "UDP" }] });
const webSlice = (pods: readonly PodName[]) =>
  endpointSlice({ service: "web", endpoints: pods.map(ep), ports: [{ port: 80 }] });

for (const mode of TRAFFIC_MODES)
  describe(`endpoint changes under live traffic (${mode} mode)`, () => {
    const env = withDaemonSandbox({
      prefix: "kptpxchurn",
      mode,
      pods: PODS,
      podServer: { readyTimeoutMs: 30_000 },
      daemon: {
        manifests: {
          ...nodeManifest(),
          "dns.yaml": service({
            name: "dns",
            clusterIP: UDP_VIP,
            ports: [{ port: UDP_PORT, targetPort: 80, protocol: "UDP" }],
          }),
          "dns-slice.yaml": udpSlice("udp-a"),
          "web.yaml": service({ name: "web", clusterIP: WEB_VIP, ports: [{ port: 80 }] }),
          "web-slice.yaml": webSlice(["web-a", "web-b"]),
        },
      },
    });

    it("moves a UDP client that keeps its source port to the replacement endpoint", async () => {
      const { sandbox, daemon } = env;
      const client = await TrafficClient.start(sandbox, CLIENT, "udp-stream", {
        host: UDP_VIP,
        port: UDP_PORT,
        sport: 40053,
        intervalMs: 100,
        timeoutMs: 500,
      });
      let summary;
      try {
        await client.waitForAnswerFrom("udp-a", 10_000);
        // The pod goes away first (as when it is deleted), then its Service's slice is updated.
        await sandbox.removePod("udp-a");
        await daemon.apply(() => daemon.write("dns-slice.yaml", udpSlice("udp-b")));
        await client.waitForAnswerFrom("udp-b", 10_000).catch((error: Error) => {
          throw new Error(`${error.message}${daemon.logTail()}`);
        });
      } finally {
        summary = await client.stop();
      }
      assert.ok((summary.byPod["udp-b"] ?? 0) > 0, JSON.stringify(summary));
      const deleted = metricValue(
        await daemon.metrics(),
        "kubeproxy_conntrack_reconciler_deleted_entries_total",
        "IPv4",
      );
      assert.ok((deleted ?? 0) >= 1, `reconciler deleted ${deleted} entries`);
    });

    it("keeps every connection working while an extra endpoint comes and goes", async () => {
      const { sandbox, daemon } = env;
      const client = await TrafficClient.start(sandbox, CLIENT, "load", {
        host: WEB_VIP,
        port: 80,
        intervalMs: 20,
        timeoutMs: 3_000,
      });
      let summary;
      try {
        for (let round = 0; round < 3; round++) {
          await daemon.apply(() => daemon.write("web-slice.yaml", webSlice(["web-a", "web-b", "web-c"])));
          await sleep(700);
          await daemon.apply(() => daemon.write("web-slice.yaml", webSlice(["web-a", "web-b"])));
          await sleep(300);
        }
      } finally {
        summary = await client.stop();
      }
      assert.deepEqual(summary.failures, [], `${JSON.stringify(summary)}${daemon.logTail()}`);
      assert.ok(summary.answers >= 20, JSON.stringify(summary));
      for (const pod of ["web-a", "web-b"]) assert.ok((summary.byPod[pod] ?? 0) > 0, JSON.stringify(summary));
    });
  });
