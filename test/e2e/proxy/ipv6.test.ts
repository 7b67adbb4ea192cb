import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { probe } from "../../../src/sandbox/client.ts";
import type { ProbeReport } from "../../../src/sandbox/client.ts";
import { WEB, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { endpointSlice, nodeObject, service } from "../../support/daemon.ts";
import { TRAFFIC_MODES } from "../../support/service-matrix.ts";

/*
 * A dual-stack node: an IPv6 Service is programmed through ip6tables (iptables mode) or into
 * `table ip6 kube-proxy` (nftables mode) and answers over IPv6 from a pod, from the node itself
 * and from an external client, next to an IPv4 Service. Each case runs in both modes.
 */

const NODE = WEB.node;
const CLIENT = WEB.client;
const NODE_V4 = WEB.nodeIP;
const NODE_V6 = "fd00:50::1";
const POD_CIDR_V6 = "fd00:10:244::/64";
const SERVICE_CIDR_V6 = "fd00:10:96::/112";
const VIP_V6 = "fd00:10:96::10";
const VIP_V4 = "10.1.0.10";
const NODE_PORT = 30600;
const PODS = {
  "web-a": { ipv4: "10.244.0.30", ipv6: "fd00:10:244::30" },
  "web-b": { ipv4: "10.244.0.31", ipv6: "fd00:10:244::31" },
} as const;

for (const mode of TRAFFIC_MODES)
  describe(`IPv6 Services on a dual-stack node (${mode} mode)`, () => {
    const balanced = (report: ProbeReport, total: number): void => {
      assert.deepEqual(
        report.errors,
        {},
        `${report.host}: ${JSON.stringify(report.results.slice(0, 3))}${env.daemon.logTail(10)}`,
      );
      for (const pod of Object.keys(PODS)) {
        assert.ok(
          (report.byPod[pod] ?? 0) >= total / 5,
          `${report.host}: ${pod} got ${report.byPod[pod] ?? 0} of ${total}`,
        );
      }
    };

    const endpoints = (family: "ipv4" | "ipv6") =>
      Object.entries(PODS).map(([pod, addresses]) => ({ ip: addresses[family], node: NODE, pod }));
    const env = withDaemonSandbox({
      prefix: "kptpxv6",
      mode,
      clusterCIDR: "10.244.0.0/16,fd00:10:244::/56",
      node: { ipv6: NODE_V6, podCIDRv6: POD_CIDR_V6, defaultGateways: ["192.168.50.254", "fd00:50::fe"] },
      client: { ipv6: "fd00:50::2", routes: ["10.1.0.0/16", SERVICE_CIDR_V6] },
      pods: PODS,
      daemon: {
        families: ["IPv4", "IPv6"],
        manifests: {
          "node.yaml": nodeObject({
            name: NODE,
            ips: [NODE_V4, NODE_V6],
            podCIDRs: ["10.244.0.0/24", POD_CIDR_V6],
          }),
          "web6.yaml": [
            service({
              name: "web6",
              type: "NodePort",
              ipFamily: "IPv6",
              clusterIP: VIP_V6,
              ports: [{ port: 80, nodePort: NODE_PORT }],
            }),
            endpointSlice({
              service: "web6",
              addressType: "IPv6",
              endpoints: endpoints("ipv6"),
              ports: [{ port: 80 }],
            }),
          ],
          "web4.yaml": [
            service({ name: "web4", clusterIP: VIP_V4, ports: [{ port: 80 }] }),
            endpointSlice({ service: "web4", endpoints: endpoints("ipv4"), ports: [{ port: 80 }] }),
          ],
        },
      },
    });

    it("writes the IPv6 Service into the IPv6 rules only, and the IPv4 one into the IPv4 rules only", async () => {
      let v6: string;
      let v4: string;
      const { sandbox, daemon } = env;
      if (mode === "iptables") {
        v6 = await daemon.save("IPv6", "nat");
        v4 = await daemon.save("IPv4", "nat");
        assert.match(v6, new RegExp(`-d ${VIP_V6}/128 .*-j KUBE-SVC-`));
        assert.match(v4, new RegExp(`-d ${VIP_V4}/32 .*-j KUBE-SVC-`));
      } else {
        const table = async (family: string) =>
          (await sandbox.exec(NODE, ["nft", "list", "table", family, "kube-proxy"])).stdout;
        v6 = await table("ip6");
        v4 = await table("ip");
        assert.match(v6, new RegExp(`${VIP_V6} \\. tcp \\. 80 : goto service-`));
        assert.match(v4, new RegExp(`${VIP_V4.replaceAll(".", "\\.")} \\. tcp \\. 80 : goto service-`));
      }
      assert.ok(!v6.includes("default/web4") && !v4.includes("default/web6"));
    });

    it("balances the IPv6 ClusterIP from a pod, the node and an external client", async () => {
      const { sandbox } = env;
      const step = { protocol: "tcp" as const, host: VIP_V6, port: 80, count: 40, timeoutMs: 3_000 };
      const [fromPod] = await probe(sandbox, "web-a", [step]);
      const [fromNode] = await probe(sandbox, NODE, [step]);
      const [fromClient, nodePort] = await probe(sandbox, CLIENT, [
        step,
        { protocol: "tcp", host: NODE_V6, port: NODE_PORT, count: 40, timeoutMs: 3_000 },
      ]);
      for (const report of [fromPod, fromNode, fromClient, nodePort]) {
        assert.ok(report !== undefined);
        balanced(report, 40);
      }
      // The pod saw IPv6 clients: the traffic never went through an IPv4 path.
      for (const report of [fromPod, fromClient]) {
        assert.ok(
          Object.keys(report?.byClient ?? {}).every((client) => client.includes(":")),
          JSON.stringify(report?.byClient),
        );
      }
    });
  });
