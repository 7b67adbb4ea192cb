import assert from "node:assert/strict";
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parse, stringify } from "yaml";
import { ProcessRunner } from "../../../src/kernel/exec.ts";
import type { BackgroundProcess } from "../../../src/kernel/spawn.ts";
import { probeHttp } from "../../../src/sandbox/client.ts";
import type { Sandbox } from "../../../src/sandbox/topology.ts";
import { startSecureServer, TEST_TOKEN } from "../../support/apiserver-fixtures.ts";
import type { SecureServer } from "../../support/apiserver-fixtures.ts";
import { NetnsApiBridge } from "../../support/apiserver-netns.ts";
import {
  daemonArgv,
  endpointSlice,
  nodeMetrics,
  nodeObject,
  service,
  sleep,
  startApiServerDaemon,
  startProxyNode,
  waitFor,
} from "../../support/daemon.ts";
import type { KubeObject } from "../../support/daemon.ts";
import { TrafficClient } from "../../support/traffic.ts";

/*
 * The daemon in a node namespace against the test apiserver (reached through NetnsApiBridge),
 * driven with kubectl like a cluster: Services appear within the min-sync-period, scaling moves
 * traffic, deletes REJECT; API faults (dropped, stalled and expired watches, 500s, an apiserver
 * outage) never disturb the programmed rules, and afterwards the rules match the server exactly.
 * The cases run in order on one daemon.
 */

const NODE = "node-1";
const NODE_IP = "192.168.50.1";
const CLIENT = "client";
const PODS = { "web-a": "10.244.0.30", "web-b": "10.244.0.31", "web-c": "10.244.0.32" } as const;
type Pod = keyof typeof PODS;
const VIP = "10.1.0.80";
const MIN_SYNC_MS = 1_000;
/** What a loaded two-core box adds on top of min-sync-period (watch delivery, restore, tsx). */
const SLACK_MS = 4_000;
/**
 * Faults back to back push the reflector back-off up (800 ms doubling, reset only by an event or
 * two quiet minutes), so convergence after the later faults may wait out a back-off of ~20 s.
 */
const CONVERGE_MS = 45_000;
const METRICS = "127.0.0.1:10249";

function webService(name: string, clusterIP: string): KubeObject {
  return service({ name, clusterIP, ports: [{ port: 80 }] });
}

function webSlice(name: string, pods: readonly Pod[]): KubeObject {
  return endpointSlice({
    service: name,
    name: `${name}-abcde`,
    endpoints: pods.map((pod) => ({ ip: PODS[pod], node: NODE, pod })),
    ports: [{ port: 80 }],
  });
}

/** Every namespace/name that the rules mention (chain comments name the Service). */
function servicesInRules(save: string): string[] {
  const names = new Set<string>();
  for (const m of save.matchAll(/--comment "?(default\/[a-z0-9-]+)/g)) names.add(m[1]!);
  return [...names].sort();
}

describe("the daemon against an API server", () => {
  const runner = new ProcessRunner();
  let sandbox: Sandbox;
  let secure: SecureServer;
  let bridge: NetnsApiBridge;
  let daemon: BackgroundProcess;
  let manifestDir: string;

  const log = () =>
    `\n--- daemon log (tail) ---\n${daemon.stderr.trimEnd().split("\n").slice(-30).join("\n")}`;
  const save = async (): Promise<string> => (await sandbox.exec(NODE, ["iptables-save"])).stdout;
  const metrics = (): Promise<string> => nodeMetrics(sandbox, NODE, METRICS);
  const kubectl = (...args: string[]) =>
    runner.run(
      ["kubectl", "--kubeconfig", secure.kubeconfig, "--cache-dir", join(manifestDir, "cache"), ...args],
      {
        timeoutMs: 30_000,
      },
    );
  const apply = async (name: string, objects: readonly KubeObject[]) => {
    const file = join(manifestDir, `${name}.yaml`);
    writeFileSync(file, objects.map((o) => stringify(o)).join("---\n"));
    await kubectl("apply", "-f", file);
  };
  const waitForServices = async (wanted: readonly string[], timeoutMs = CONVERGE_MS) => {
    let last = "";
    await waitFor(
      `rules for exactly ${JSON.stringify(wanted)}`,
      async () => {
        last = await save();
        return JSON.stringify(servicesInRules(last)) === JSON.stringify([...wanted].sort())
          ? true
          : undefined;
      },
      timeoutMs,
      () => `\n--- services in rules: ${JSON.stringify(servicesInRules(last))}${log()}`,
    );
  };
  const serverServices = async () => {
    const out = await kubectl("get", "services", "-o", "json");
    return (JSON.parse(out.stdout) as { items: { metadata: { namespace: string; name: string } }[] }).items
      .map((s) => `${s.metadata.namespace}/${s.metadata.name}`)
      .sort();
  };

  before(async () => {
    sandbox = await startProxyNode("kptdapi", {
      node: { name: NODE, ipv4: NODE_IP, podCIDR: "10.244.0.0/24", defaultGateways: ["192.168.50.254"] },
      client: { name: CLIENT, ipv4: "192.168.50.2", routes: ["10.1.0.0/16"] },
      pods: PODS,
      podServer: { udpPort: null },
    });
    secure = await startSecureServer({ bookmarkIntervalMs: 2_000 });
    manifestDir = secure.pki.dir;
    secure.server.put(nodeObject({ name: NODE, ips: [NODE_IP], podCIDRs: ["10.244.0.0/24"] }));
    bridge = await NetnsApiBridge.start(sandbox, NODE, secure);
    daemon = await startApiServerDaemon(sandbox, {
      node: NODE,
      kubeconfig: bridge.kubeconfig,
      minSyncPeriod: `${MIN_SYNC_MS / 1000}s`,
      metricsAddress: METRICS,
      healthzAddress: "127.0.0.1:10256",
      args: ["--cluster-cidr", "10.244.0.0/16"],
      startTimeoutMs: 60_000,
    });
  });

  after(async () => {
    await daemon?.stop(5_000);
    await bridge?.close();
    await secure?.close();
    await sandbox?.dispose();
  });

  it("takes the node IP from the Node object", async () => {
    assert.match(daemon.stderr, /Using the API server/, log());
    assert.doesNotMatch(daemon.stderr, /No Node object found/, log());
  });

  it("records a Starting event for its Node, as upstream (events.k8s.io/v1, read back with kubectl)", async () => {
    const event = await waitFor(
      "a Starting event",
      async () => {
        const out = await kubectl("get", "events.events.k8s.io", "-n", "default", "-o", "json");
        const items = (JSON.parse(out.stdout) as { items: Array<Record<string, unknown>> }).items;
        return items.find((e) => e["reason"] === "Starting");
      },
      10_000,
      log,
    );
    assert.deepEqual(event["regarding"], { kind: "Node", name: NODE, uid: NODE });
    assert.equal(event["type"], "Normal");
    assert.equal(event["action"], "StartKubeProxy");
    assert.equal(event["reportingController"], "kube-proxy");
    assert.equal(event["reportingInstance"], `kube-proxy-${NODE}`);
    assert.match(String(event["eventTime"]), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  });

  it("programs a Service applied with kubectl within the min-sync-period, and serves it", async () => {
    const started = Date.now();
    await apply("web", [webService("web", VIP), webSlice("web", ["web-a", "web-b"])]);
    const applied = Date.now();
    await waitForServices(["default/web"], MIN_SYNC_MS + SLACK_MS);
    const programmedMs = Date.now() - applied;
    assert.ok(programmedMs <= MIN_SYNC_MS + SLACK_MS, `programmed after ${programmedMs} ms`);
    const report = await probeHttp(sandbox, CLIENT, { host: VIP, port: 80, count: 10 });
    assert.deepEqual(report.errors, {}, `ClusterIP from the client: ${JSON.stringify(report)}${log()}`);
    assert.deepEqual(Object.keys(report.byPod).sort(), ["web-a", "web-b"]);
    process.stdout.write(
      `# kubectl apply → rules: ${programmedMs} ms (apply itself ${applied - started} ms)\n`,
    );
  });

  it("moves traffic when the endpoints are scaled", async () => {
    const load = await TrafficClient.start(sandbox, CLIENT, "load", { host: VIP, port: 80, intervalMs: 20 });
    try {
      await apply("web-slice", [webSlice("web", ["web-a", "web-b", "web-c"])]);
      await load.waitForAnswerFrom("web-c", MIN_SYNC_MS + SLACK_MS + 5_000);
      await apply("web-slice", [webSlice("web", ["web-c"])]);
      await waitFor(
        "only web-c in the rules",
        async () => ((await save()).match(/-j DNAT/g)?.length === 1 ? true : undefined),
        MIN_SYNC_MS + SLACK_MS,
        log,
      );
    } finally {
      const summary = await load.stop();
      assert.deepEqual(summary.failures, [], `scaling broke connections: ${JSON.stringify(summary)}`);
    }
    const report = await probeHttp(sandbox, CLIENT, { host: VIP, port: 80, count: 5 });
    assert.deepEqual(report.byPod, { "web-c": 5 }, JSON.stringify(report));
    await apply("web-slice", [webSlice("web", ["web-a", "web-b"])]);
  });

  it("rejects connections to a Service whose endpoints were deleted, and forgets deleted Services", async () => {
    await apply("gone", [webService("gone", "10.1.0.90"), webSlice("gone", ["web-a"])]);
    await waitForServices(["default/gone", "default/web"]);
    await kubectl("delete", "endpointslice", "gone-abcde");
    await waitFor(
      "the no-endpoints REJECT",
      async () => ((await save()).includes('"default/gone has no endpoints"') ? true : undefined),
      MIN_SYNC_MS + SLACK_MS,
      log,
    );
    // One probe: the node sends ICMP errors at most once a second (icmp_ratelimit).
    const refused = await probeHttp(sandbox, "web-b", { host: "10.1.0.90", port: 80, timeoutMs: 5_000 });
    assert.deepEqual(refused.errors, { refused: 1 }, JSON.stringify(refused) + log());
    await kubectl("delete", "service", "gone");
    await waitForServices(["default/web"], MIN_SYNC_MS + SLACK_MS);
  });

  it("keeps the rules and the traffic through API faults, then converges to the server", async () => {
    const load = await TrafficClient.start(sandbox, CLIENT, "load", {
      host: VIP,
      port: 80,
      intervalMs: 50,
      timeoutMs: 2_000,
    });
    const expectServer = async (wanted: string[]) => {
      assert.deepEqual(
        await serverServices(),
        wanted.filter((s) => s !== "default/kubernetes"),
      );
      await waitForServices(wanted);
    };
    try {
      // A dropped watch: the informer re-watches from its resource version.
      secure.server.dropWatches();
      await apply("a", [webService("a", "10.1.0.81"), webSlice("a", ["web-a"])]);
      await expectServer(["default/a", "default/web"]);

      // A stalled watch misses a delete; once the connection is cut the delete arrives.
      secure.server.stallWatches();
      await kubectl("delete", "service", "a");
      await sleep(1_500);
      assert.deepEqual(servicesInRules(await save()), ["default/a", "default/web"]);
      secure.server.dropWatches();
      await expectServer(["default/web"]);

      // 410 Gone: history compacted while the watch was away; the relist must find the delete.
      await apply("b", [webService("b", "10.1.0.82"), webSlice("b", ["web-b"])]);
      await expectServer(["default/b", "default/web"]);
      secure.server.stallWatches();
      await kubectl("delete", "service", "b");
      await apply("c", [webService("c", "10.1.0.83"), webSlice("c", ["web-c"])]);
      secure.server.expireResourceVersions();
      secure.server.dropWatches();
      await expectServer(["default/c", "default/web"]);

      // 500s on every request for a while.
      secure.server.failRequests(3, 500, { when: (r) => r.userAgent.startsWith("kube-proxy-ts") });
      secure.server.dropWatches();
      await kubectl("delete", "service", "c");
      await expectServer(["default/web"]);

      // The apiserver goes away (a restart): changes made meanwhile arrive after it is back.
      bridge.outage();
      await apply("d", [webService("d", "10.1.0.84"), webSlice("d", ["web-a"])]);
      await sleep(3_000);
      assert.deepEqual(servicesInRules(await save()), ["default/web"]);
      bridge.restore();
      await expectServer(["default/d", "default/web"]);
    } finally {
      const summary = await load.stop();
      assert.ok(summary.answers > 0, JSON.stringify(summary));
      assert.deepEqual(summary.failures, [], `traffic failed during the faults: ${JSON.stringify(summary)}`);
    }
    const text = await metrics();
    const notices = (kind: string) =>
      [
        ...text.matchAll(
          new RegExp(`^kubeproxy_ts_informer_notices_total\\{[^}]*kind="${kind}"[^}]*\\} (\\d+)`, "gm"),
        ),
      ]
        .map((m) => Number(m[1]))
        .reduce((a, b) => a + b, 0);
    assert.ok(notices("relist") >= 1, `no relist counted:\n${text}`);
    assert.ok(notices("watch-failed") + notices("list-failed") >= 3, `failures not counted:\n${text}`);
    // IPv4: the Services here have no IPv6 ClusterIP, so the IPv6 proxier has nothing to sync.
    const syncs = /^kubeproxy_sync_proxy_rules_duration_seconds_count\{ip_family="IPv4"\} (\d+)/m.exec(text);
    assert.ok(Number(syncs?.[1] ?? 0) >= 8, `sync count: ${syncs?.[0]}`);
  });

  it("stops on SIGTERM and leaves the rules in place", async () => {
    await daemon.stop(10_000);
    assert.match(daemon.stderr, /Received signal, shutting down/, log());
    assert.deepEqual(servicesInRules(await save()), await serverServices());
    const report = await probeHttp(sandbox, CLIENT, { host: VIP, port: 80, count: 4 });
    assert.deepEqual(report.errors, {}, JSON.stringify(report));
  });

  it("authenticates with a kubeconfig exec plugin (--init-only: lists, builds its proxiers, exits 0)", async () => {
    const plugin = join(manifestDir, "token-plugin.sh");
    writeFileSync(
      plugin,
      [
        "#!/bin/sh",
        '[ -n "$KUBERNETES_EXEC_INFO" ] || exit 3',
        'printf \'{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s"}}\' "$PLUGIN_TOKEN"',
        "",
      ].join("\n"),
    );
    chmodSync(plugin, 0o755);
    const kubeconfig = parse(readFileSync(bridge.kubeconfig, "utf8")) as {
      users: { user: Record<string, unknown> }[];
    };
    for (const entry of kubeconfig.users)
      entry.user = {
        exec: {
          apiVersion: "client.authentication.k8s.io/v1",
          command: plugin,
          env: [{ name: "PLUGIN_TOKEN", value: TEST_TOKEN }],
        },
      };
    const file = join(manifestDir, "exec-kubeconfig");
    writeFileSync(file, stringify(kubeconfig));
    const result = await sandbox.exec(
      NODE,
      [
        ...daemonArgv(),
        "--kubeconfig",
        file,
        "--hostname-override",
        NODE,
        "--init-only",
        "--metrics-bind-address",
        "",
        "--healthz-bind-address",
        "",
      ],
      { okExitCodes: [0, 1, 70], timeoutMs: 60_000 },
    );
    assert.equal(result.exitCode, 0, result.stderr + result.stdout);
    assert.match(result.stderr + result.stdout, /Initialization done/);
  });

  it("exits non-zero naming the kubeconfig file and field when the kubeconfig is bad", async () => {
    const bad = join(manifestDir, "bad-kubeconfig");
    writeFileSync(
      bad,
      JSON.stringify({
        apiVersion: "v1",
        kind: "Config",
        clusters: [{ name: "test", cluster: { server: 42 } }],
        users: [{ name: "u", user: {} }],
        contexts: [{ name: "test", context: { cluster: "test", user: "u" } }],
        "current-context": "test",
      }),
    );
    const result = await sandbox.exec(
      NODE,
      [
        ...daemonArgv(),
        "--kubeconfig",
        bad,
        "--hostname-override",
        NODE,
        "--metrics-bind-address",
        "",
        "--healthz-bind-address",
        "",
      ],
      { okExitCodes: [0, 1, 70], timeoutMs: 60_000 },
    );
    assert.equal(result.exitCode, 1, result.stderr);
    assert.ok(result.stderr.includes(bad), result.stderr);
    assert.ok(
      result.stderr.includes(`${bad}: clusters["test"].cluster.server: must be a string`),
      result.stderr,
    );
  });
});
