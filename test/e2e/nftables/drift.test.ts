/**
 * Drift in nftables mode, with the real daemon in a sandbox: the table it programmed is read
 * back over netlink and is in sync (`kube-proxy-ts diff --proxy-mode nftables`, the debug
 * endpoints). Someone then deletes an element of ours, adds a rule to one of our chains, and adds
 * a table of their own: `diff` (text and JSON), /debug/kube-proxy-ts/diff(.json) and the SIGUSR1
 * dump report the first two under the Service and the table as foreign. The next full sync (here
 * a topology change, as the hourly one) puts our objects back, leaves the foreign table, and
 * counts what it found and repaired in kubeproxy_ts_sync_proxy_rules_drift_total.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Sandbox } from "../../../src/sandbox/topology.ts";
import {
  daemonArgv,
  disposeProxyNode,
  endpointSlice,
  nodeObject,
  ProxyDaemon,
  service,
  startProxyNode,
  waitFor,
} from "../../support/daemon.ts";

const NODE = "node-1";
const NODE_IP = "192.168.50.1";
const VIP = "10.1.0.80";
const PODS = { "web-a": "10.244.0.30" } as const;
const FLAGS = ["--proxy-mode", "nftables", "--cluster-cidr", "10.244.0.0/16"];

interface Report {
  readonly inSync: boolean;
  readonly differences: number;
  readonly services: ReadonlyArray<{
    readonly service: string | null;
    readonly objects: ReadonlyArray<{
      readonly kind: string;
      readonly name: string;
      readonly change: string;
      readonly missing: readonly string[];
      readonly extra: readonly string[];
    }>;
  }>;
  readonly foreign: ReadonlyArray<{ readonly kind: string; readonly name: string }>;
}

function node(zone: string) {
  const base = nodeObject({ name: NODE, ips: [NODE_IP], podCIDRs: ["10.244.0.0/24"] });
  const metadata = base["metadata"] as { name: string; labels: Record<string, string> };
  return {
    ...base,
    metadata: { ...metadata, labels: { ...metadata.labels, "topology.kubernetes.io/zone": zone } },
  };
}

function driftMetric(metrics: string, outcome: "found" | "repaired"): number {
  for (const line of metrics.split("\n"))
    if (
      line.startsWith("kubeproxy_ts_sync_proxy_rules_drift_total{") &&
      line.includes('ip_family="IPv4"') &&
      line.includes(`outcome="${outcome}"`)
    )
      return Number(line.slice(line.lastIndexOf(" ") + 1));
  return 0;
}

describe("nftables mode: drift found by reading the table back, reported, and repaired", () => {
  let sandbox: Sandbox | undefined;
  let daemon: ProxyDaemon | undefined;
  const debugDir = mkdtempSync(join(tmpdir(), "kpt-nftdrift-"));
  const nft = async (...args: string[]) => (await sandbox!.exec(NODE, ["nft", ...args])).stdout;
  const diff = async (...extra: string[]) =>
    (
      await sandbox!.exec(
        NODE,
        [
          ...daemonArgv(),
          "diff",
          ...FLAGS,
          "--hostname-override",
          NODE,
          "--manifests",
          daemon!.dir,
          ...extra,
        ],
        { timeoutMs: 60_000 },
      )
    ).stdout;
  const diffJson = async (): Promise<Report> => {
    const parsed = JSON.parse(await diff("-o", "json")) as { schema: string; reports: Report[] };
    assert.equal(parsed.schema, "kube-proxy-ts/diff/v1");
    return parsed.reports.find((r) => (r as unknown as { family: string }).family === "IPv4")!;
  };
  const debug = async (path: string) =>
    (
      await sandbox!.exec(NODE, [
        "curl",
        "-sS",
        "--max-time",
        "20",
        `http://${daemon!.metricsAddress}/debug/kube-proxy-ts/${path}`,
      ])
    ).stdout;

  before(async () => {
    sandbox = await startProxyNode("kptnftdrift", {
      node: { name: NODE, ipv4: NODE_IP, podCIDR: "10.244.0.0/24", defaultGateways: ["192.168.50.254"] },
      client: { name: "client", ipv4: "192.168.50.2", routes: ["10.1.0.0/16"] },
      pods: PODS,
      podServer: { udpPort: null, readyTimeoutMs: 30_000 },
    });
    daemon = await ProxyDaemon.start(sandbox, {
      node: NODE,
      args: [...FLAGS, "--iptables-sync-period", "2s"],
      env: { KUBE_PROXY_TS_DEBUG_DIR: debugDir },
      manifests: {
        "node.yaml": node("zone-a"),
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

  after(async () => {
    try {
      await disposeProxyNode(daemon, sandbox);
    } finally {
      rmSync(debugDir, { recursive: true, force: true });
    }
  });

  it("reads the daemon's table back in sync: diff and the debug endpoint", async () => {
    const report = await diffJson();
    assert.equal(report.inSync, true, JSON.stringify(report, null, 2));
    assert.deepEqual(report.foreign, []);
    assert.match(
      await diff(),
      /kernel: live \(netlink dump of table ip kube-proxy\)\n[^]*nftables IPv4: in sync/,
    );
    const served = JSON.parse(await debug("diff.json")) as { reports: Report[] };
    assert.equal(served.reports[0]!.inSync, true, JSON.stringify(served, null, 2));
    assert.match(await debug("intended"), /^add table ip kube-proxy/m);
  });

  it("reports a deleted element and an added rule under the Service, and a foreign table apart", async () => {
    const table = await nft("list", "table", "ip", "kube-proxy");
    const chain = /chain (service-[A-Z2-7]{8}-default\/web\/tcp\/http) \{/.exec(table)?.[1];
    assert.ok(chain !== undefined, table);
    await sandbox!.exec(NODE, ["nft", "-f", "-"], {
      stdin: [
        `delete element ip kube-proxy cluster-ips { ${VIP} }`,
        `add rule ip kube-proxy ${chain} counter accept`,
        "add table ip someone-else",
        "",
      ].join("\n"),
    });
    const report = await diffJson();
    assert.equal(report.inSync, false);
    assert.equal(report.differences, 2, JSON.stringify(report, null, 2));
    assert.deepEqual(
      report.services.map((s) => [
        s.service,
        s.objects.map((o) => [o.kind, o.name, o.missing, o.extra.length]),
      ]),
      [
        [
          "default/web",
          [
            ["chain", chain, [], 1],
            ["set", "cluster-ips", [VIP], 0],
          ],
        ],
      ],
    );
    assert.deepEqual(report.foreign, [{ kind: "table", table: "ip someone-else", name: "someone-else" }]);
    const text = await diff();
    assert.match(text, /nftables IPv4: 2 difference\(s\) in 1 place\(s\)/);
    assert.match(text, /Service default\/web:\n\s+chain ip kube-proxy service-/);
    assert.match(text, /- missing: 10\.1\.0\.80/);
    assert.match(
      text,
      /foreign \(not the proxy's, left alone; not drift\): 1\n\s+table ip someone-else someone-else/,
    );
    assert.match(await debug("diff"), /nftables IPv4: 2 difference\(s\)/);
  });

  it("writes the same report on SIGUSR1", async () => {
    // The daemon is the one process whose argv names its own manifests folder.
    const pids = readdirSync("/proc")
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0").includes(daemon!.dir);
        } catch {
          return false;
        }
      });
    assert.equal(pids.length, 1, `the daemon's process: ${pids.join(", ")}`);
    process.kill(Number(pids[0]), "SIGUSR1");
    const file = await waitFor(
      "the SIGUSR1 dump",
      async () => readdirSync(debugDir).find((f) => f.startsWith("kube-proxy-ts-debug.")),
      10_000,
      () => daemon!.logTail(),
    );
    const dump = readFileSync(join(debugDir, file), "utf8");
    assert.match(dump, /=== drift[^]*nftables IPv4: 2 difference\(s\)[^]*Service default\/web/);
    assert.match(dump, /=== intended ruleset[^]*add table ip kube-proxy/);
  });

  it("repairs it on the next full sync, leaves the foreign table, and counts found and repaired", async () => {
    const before = await daemon!.metrics();
    assert.equal(driftMetric(before, "found"), 0, "nothing found before the full sync");
    daemon!.write("node.yaml", node("zone-b"));
    await waitFor(
      "the full sync to count the repaired drift",
      async () => (driftMetric(await daemon!.metrics(), "repaired") >= 2 ? true : undefined),
      30_000,
      () => daemon!.logTail(),
    );
    const metrics = await daemon!.metrics();
    assert.equal(driftMetric(metrics, "found"), 2);
    assert.equal(driftMetric(metrics, "repaired"), 2);
    const report = await diffJson();
    assert.equal(report.inSync, true, JSON.stringify(report, null, 2));
    assert.deepEqual(report.foreign, [{ kind: "table", table: "ip someone-else", name: "someone-else" }]);
    assert.match(await nft("list", "tables", "ip"), /table ip someone-else/);
    assert.match(await nft("list", "set", "ip", "kube-proxy", "cluster-ips"), /10\.1\.0\.80/);
  });
});
