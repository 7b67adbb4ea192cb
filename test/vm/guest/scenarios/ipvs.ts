/*
 * ipvs mode on a real IPVS kernel: one daemon (`--proxy-mode ipvs`, manifests folder) serves every
 * scenario; each scenario adds its own Service (its own IPs and ports) and removes it at the end.
 * Traffic is real TCP/UDP from the bench's client namespaces to the pods' agents, which answer with
 * their name and the client address they saw.
 */
import assert from "node:assert/strict";
import { unlinkSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { TestContext } from "node:test";
import {
  Daemon,
  NODE_IP,
  availableModes,
  cleanup,
  copySeed,
  endpointSlice,
  exec,
  ipvsTable,
  kubeLeftovers,
  repeat,
  service,
  sleep,
  tally,
  virtualServer,
  waitFor,
} from "../lab.ts";
import type { EndpointSpec, PortSpec, ServiceSpec } from "../lab.ts";
import { EXTRA_PODS, SEED_PODS, world } from "../world.ts";

const modes = await availableModes();
const skip = modes.includes("ipvs")
  ? false
  : `ipvs mode is not in this build (available: ${modes.join(", ")}); its scenarios run once the ipvs backend is merged`;

const SEED_CLUSTER_IP = "10.1.125.152";
const SEED_NODE_PORT = 30978;
const [P3, P4, P5] = EXTRA_PODS;
const TIMEOUT = { timeout: 600_000 };
const BIN = fileURLToPath(new URL("../../bin/kube-proxy-ts.js", import.meta.url));

/** A see-inside command of the compiled project (`trace`, `explain`), in the node. */
async function kpt(args: readonly string[]): Promise<string> {
  const r = await exec([process.execPath, BIN, ...args], { timeoutMs: 180_000, allowFail: true });
  assert.equal(r.code, 0, `kube-proxy-ts ${args.join(" ")}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** One TCP connection from the node itself (the test runs in the VM's root namespace). */
function tcpFromNode(host: string, port: number, timeoutMs: number): Promise<{ ok: boolean; reply: string }> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ ok: false, reply: "timeout" });
    }, timeoutMs);
    socket.once("data", (d: Buffer) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ok: true, reply: d.toString().trim() });
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ ok: false, reply: error.code ?? error.message });
    });
  });
}

interface TracedOutcome {
  readonly probability: number;
  readonly verdict: string;
  readonly dnat?: string;
  readonly masquerade: boolean;
  readonly decidedBy?: { readonly table: string; readonly chain: string };
}

let daemon: Daemon;

function ext() {
  return world().client("ext").agent;
}

function names(counts: Record<string, number>): string[] {
  return Object.keys(counts).sort();
}

/** Writes one Service with its EndpointSlice and waits for the sync. */
async function publish(spec: ServiceSpec, endpoints: readonly EndpointSpec[]): Promise<void> {
  await daemon.apply(() =>
    daemon.write(`svc-${spec.name}.yaml`, [service(spec), endpointSlice(spec.name, endpoints, spec.ports)]),
  );
}

async function retract(name: string): Promise<void> {
  await daemon.apply(() => daemon.remove(`svc-${name}.yaml`));
}

/** Runs `body` with the Service published, and removes it afterwards even on failure. */
async function withService(
  spec: ServiceSpec,
  endpoints: readonly EndpointSpec[],
  body: () => Promise<void>,
): Promise<void> {
  await publish(spec, endpoints);
  try {
    await body();
  } finally {
    await retract(spec.name);
  }
}

async function ipvsText(t: TestContext, args: readonly string[] = []): Promise<string> {
  const text = (await exec(["ipvsadm", "-Ln", ...args])).stdout;
  t.diagnostic(`ipvsadm -Ln ${args.join(" ")}\n${text.trim()}`);
  return text;
}

const tcp80 = (nodePort?: number): PortSpec[] => [
  { port: 80, protocol: "TCP", ...(nodePort === undefined ? {} : { nodePort }) },
];

describe("ipvs mode", { skip, timeout: 3_600_000 }, () => {
  before(async () => {
    daemon = new Daemon("ipvs", ["--ipvs-min-sync-period", "0s"]);
    copySeed(daemon.dir);
    await daemon.start();
  });
  after(async () => {
    await daemon.dispose();
  });

  test(
    "the seed's nginx Service: ClusterIP and NodePort spread over both pods; the walk in ipvsadm -Ln",
    TIMEOUT,
    async (t) => {
      const cluster = tally(await repeat(8, () => ext().tcp(SEED_CLUSTER_IP, 80)));
      const nodePort = tally(await repeat(8, () => ext().tcp(NODE_IP, SEED_NODE_PORT)));
      const seed = SEED_PODS.map((p) => p.name).sort();
      assert.deepEqual(names(cluster), seed, `ClusterIP: ${JSON.stringify(cluster)}${daemon.logTail()}`);
      assert.deepEqual(names(nodePort), seed, `NodePort: ${JSON.stringify(nodePort)}${daemon.logTail()}`);
      const table = await ipvsTable();
      for (const address of [`${SEED_CLUSTER_IP}:80`, `${NODE_IP}:${SEED_NODE_PORT}`]) {
        const vs = virtualServer(table, "TCP", address);
        assert.ok(vs, `no virtual server ${address}`);
        assert.equal(vs.scheduler, "rr");
        assert.deepEqual(
          vs.realServers.map((r) => [r.address, r.forward, r.weight]).sort(),
          SEED_PODS.map((p) => [`${p.ip}:80`, "Masq", 1]).sort(),
        );
      }
      // IPVS's per-real-server counters reach `ipvsadm --stats` up to about 2 s after the
      // connections (seen in the VM): read until both pods are counted, for at most 6 s.
      const counted = (text: string, ip: string) =>
        new RegExp(`-> ${ip.replace(/\./g, "\\.")}:80\\s+[1-9]`).test(text);
      let stats = (await exec(["ipvsadm", "-Ln", "--stats"])).stdout;
      for (let i = 0; i < 24 && !SEED_PODS.every((p) => counted(stats, p.ip)); i++) {
        await sleep(250);
        stats = (await exec(["ipvsadm", "-Ln", "--stats"])).stdout;
      }
      t.diagnostic(`ipvsadm -Ln --stats\n${stats.trim()}`);
      for (const p of SEED_PODS) assert.ok(counted(stats, p.ip), `no connections counted for ${p.name}`);
      const dev = (await exec(["ip", "-4", "addr", "show", "dev", "kube-ipvs0"])).stdout;
      assert.match(
        dev,
        new RegExp(`inet ${SEED_CLUSTER_IP.replace(/\./g, "\\.")}/32`),
        "kube-ipvs0 holds the ClusterIP",
      );
    },
  );

  test("externalIPs: the external IP balances to the endpoint", TIMEOUT, async () => {
    const spec: ServiceSpec = {
      name: "ext-ip",
      clusterIP: "10.1.0.20",
      ports: tcp80(),
      externalIPs: ["203.0.113.10"],
    };
    await withService(spec, [{ ip: P3.ip }], async () => {
      const r = await ext().tcp("203.0.113.10", 80);
      assert.ok(r.ok, `externalIP: ${r.error}${daemon.logTail()}`);
      assert.equal(r.reply?.split(" ")[0], P3.name);
      assert.ok(
        virtualServer(await ipvsTable(), "TCP", "203.0.113.10:80"),
        "a virtual server for the external IP",
      );
    });
  });

  test(
    "LoadBalancer IP with source ranges: an allowed client connects, another is dropped",
    TIMEOUT,
    async () => {
      const spec: ServiceSpec = {
        name: "lb",
        type: "LoadBalancer",
        clusterIP: "10.1.0.30",
        ports: tcp80(30100),
        loadBalancerIP: "203.0.113.20",
        sourceRanges: ["192.168.50.0/24"],
      };
      await withService(spec, [{ ip: P3.ip }], async () => {
        const allowed = await ext().tcp("203.0.113.20", 80);
        assert.ok(allowed.ok, `allowed client: ${allowed.error}${daemon.logTail()}`);
        assert.equal(allowed.reply?.split(" ")[0], P3.name);
        const denied = await world().client("ext2").agent.tcp("203.0.113.20", 80, 2000);
        assert.equal(denied.ok, false, `a client outside the source ranges connected: ${denied.reply}`);
      });
    },
  );

  test(
    "externalTrafficPolicy Local: the client IP is kept; without a local endpoint the NodePort falls back to the cluster's, unmasqueraded (kubernetes#97081)",
    TIMEOUT,
    async () => {
      const local: ServiceSpec = {
        name: "local",
        type: "NodePort",
        clusterIP: "10.1.0.40",
        ports: tcp80(30200),
        externalTrafficPolicy: "Local",
        healthCheckNodePort: 30201,
      };
      await withService(local, [{ ip: P4.ip }], async () => {
        const r = await ext().tcp(NODE_IP, 30200);
        assert.ok(r.ok, `eTP Local NodePort: ${r.error}${daemon.logTail()}`);
        assert.equal(
          r.reply,
          `${P4.name} ${world().client("ext").ip}`,
          "the pod sees the client's own address",
        );
      });
      const remote: ServiceSpec = {
        name: "local-none",
        type: "NodePort",
        clusterIP: "10.1.0.41",
        ports: tcp80(30210),
        externalTrafficPolicy: "Local",
        healthCheckNodePort: 30211,
      };
      await withService(remote, [{ ip: P5.ip, node: "node-2" }], async () => {
        // Upstream's ipvs mode gives a Local NodePort without local endpoints the cluster-wide
        // ones (kubernetes#97081, unlike iptables and nftables modes, which drop), and the packet
        // keeps its client address. Here the "remote" pod hangs off this node, so the reply returns.
        const fallback = await ext().tcp(NODE_IP, 30210);
        assert.equal(
          fallback.reply,
          `${P5.name} ${world().client("ext").ip}`,
          `fallback: ${fallback.error}${daemon.logTail()}`,
        );
        const rs = virtualServer(await ipvsTable(), "TCP", `${NODE_IP}:30210`)?.realServers ?? [];
        assert.deepEqual(
          rs.map((r) => r.address),
          [`${P5.ip}:80`],
          "the NodePort's real servers",
        );
        const viaCluster = await ext().tcp("10.1.0.41", 80);
        assert.ok(viaCluster.ok, `the ClusterIP still reaches the remote endpoint: ${viaCluster.error}`);
      });
    },
  );

  test(
    "session affinity: every connection of a client lands on one pod (IPVS persistence)",
    TIMEOUT,
    async () => {
      const spec: ServiceSpec = {
        name: "sticky",
        clusterIP: "10.1.0.50",
        ports: tcp80(),
        affinitySeconds: 60,
      };
      await withService(spec, [{ ip: P3.ip }, { ip: P4.ip }], async () => {
        const counts = tally(await repeat(8, () => ext().tcp("10.1.0.50", 80)));
        assert.equal(names(counts).length, 1, `affinity: ${JSON.stringify(counts)}`);
        assert.equal(virtualServer(await ipvsTable(), "TCP", "10.1.0.50:80")?.persistent, 60);
      });
    },
  );

  test(
    "no endpoints: the virtual server exists without real servers and no connection succeeds",
    TIMEOUT,
    async () => {
      const spec: ServiceSpec = { name: "empty", clusterIP: "10.1.0.60", ports: tcp80() };
      await withService(spec, [], async () => {
        const r = await ext().tcp("10.1.0.60", 80, 2000);
        assert.equal(r.ok, false, `connected to a Service without endpoints: ${r.reply}`);
      });
    },
  );

  test("endpoint churn under load: no failed connection while endpoints come and go", TIMEOUT, async (t) => {
    const spec: ServiceSpec = { name: "churn", clusterIP: "10.1.0.70", ports: tcp80() };
    await withService(spec, [{ ip: P3.ip }, { ip: P4.ip }], async () => {
      const started = await ext().request("load-start", {
        conn: "churn",
        host: "10.1.0.70",
        port: 80,
        intervalMs: 100,
        timeoutMs: 3000,
      });
      assert.ok(started.ok);
      const steps: EndpointSpec[][] = [
        [{ ip: P3.ip }],
        [{ ip: P3.ip }, { ip: P5.ip }],
        [{ ip: P3.ip }, { ip: P5.ip, ready: false, serving: true, terminating: true }],
        [{ ip: P3.ip }, { ip: P4.ip }],
        [{ ip: P3.ip }],
      ];
      for (const endpoints of steps) {
        await publish(spec, endpoints);
        await sleep(1500);
      }
      const result = await ext().request("load-stop", { conn: "churn" });
      t.diagnostic(`churn load: ${JSON.stringify(result.counts)}, ${result.failures?.length} failures`);
      assert.deepEqual(result.failures, [], "failed connections during churn");
      assert.ok((result.counts?.[P3.name] ?? 0) > 0, "the endpoint that stayed served");
    });
  });

  test(
    "graceful termination: an established connection survives its endpoint's removal",
    TIMEOUT,
    async (t) => {
      const spec: ServiceSpec = { name: "graceful", clusterIP: "10.1.0.80", ports: tcp80() };
      await withService(spec, [{ ip: P3.ip }, { ip: P4.ip }], async () => {
        const opened = await ext().request("open", { conn: "g", host: "10.1.0.80", port: 80 });
        assert.ok(opened.ok, `open: ${opened.error}`);
        const pod = opened.reply!.split(" ")[0]!;
        const gone = [P3, P4].find((p) => p.name === pod)!;
        const stays = [P3, P4].find((p) => p.name !== pod)!;
        try {
          await publish(spec, [{ ip: stays.ip }]);
          const echoed = await ext().request("send", { conn: "g", text: "still-there" });
          assert.equal(echoed.reply, `${pod} still-there`, `the held connection: ${echoed.error}`);
          const rs = virtualServer(await ipvsTable(), "TCP", "10.1.0.80:80")?.realServers ?? [];
          const draining = rs.find((r) => r.address === `${gone.ip}:80`);
          await ipvsText(t, ["-t", "10.1.0.80:80"]);
          assert.equal(
            draining?.weight,
            0,
            "the removed endpoint's real server stays with weight 0 while it has connections",
          );
          const fresh = tally(await repeat(4, () => ext().tcp("10.1.0.80", 80)));
          assert.deepEqual(
            names(fresh),
            [stays.name],
            `new connections after the removal: ${JSON.stringify(fresh)}`,
          );
        } finally {
          await ext().request("close", { conn: "g" });
        }
      });
    },
  );

  test("UDP: a replaced endpoint stops answering the same flow at once", TIMEOUT, async () => {
    const ports: PortSpec[] = [{ port: 53, protocol: "UDP" }];
    const spec: ServiceSpec = { name: "dns", clusterIP: "10.1.0.90", ports };
    await withService(spec, [{ ip: P3.ip }], async () => {
      const before = await ext().udp("10.1.0.90", 53, { sourcePort: 40053 });
      assert.equal(before.reply?.split(" ")[0], P3.name, `UDP before: ${before.error}${daemon.logTail()}`);
      await publish(spec, [{ ip: P4.ip }]);
      const answered = await waitFor(
        "the same UDP flow to reach the new endpoint",
        async () => {
          const r = await ext().udp("10.1.0.90", 53, { sourcePort: 40053, timeoutMs: 1000 });
          return r.ok && r.reply?.split(" ")[0] === P4.name ? r : undefined;
        },
        10_000,
      );
      assert.ok(answered.ok);
    });
  });

  test(
    "trace and explain predict what IPVS does with real traffic: shares over both pods, eTP Local, no endpoints",
    TIMEOUT,
    async (t) => {
      const shared: ServiceSpec = {
        name: "traced",
        type: "NodePort",
        clusterIP: "10.1.0.100",
        ports: tcp80(30300),
      };
      const local: ServiceSpec = {
        name: "traced-local",
        type: "NodePort",
        clusterIP: "10.1.0.101",
        ports: tcp80(30310),
        externalTrafficPolicy: "Local",
        healthCheckNodePort: 30311,
      };
      const empty: ServiceSpec = { name: "traced-empty", clusterIP: "10.1.0.102", ports: tcp80() };
      await publish(shared, [{ ip: P3.ip }, { ip: P4.ip }]);
      await publish(local, [{ ip: P5.ip }]);
      await publish(empty, []);
      const client = world().client("ext").ip;
      const flowsFile = join(daemon.dir, "..", "kpt-vm-flows.txt");
      try {
        const flows = [
          `${client}:40000 10.1.0.100:80 tcp external`,
          `${client}:40000 ${NODE_IP}:30300 tcp external`,
          `${client}:40000 ${NODE_IP}:30310 tcp external`,
          `${client}:40000 10.1.0.102:80 tcp external`,
        ];
        writeFileSync(flowsFile, flows.join("\n") + "\n");
        const started = Date.now();
        const traced = (await kpt(["trace", "--proxy-mode", "ipvs", "--flows", flowsFile, "-o", "json"]))
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l) as { flow: number; outcomes: TracedOutcome[] });
        t.diagnostic(`trace of ${flows.length} flows against the live node: ${Date.now() - started} ms`);
        const text = await kpt([
          "trace",
          "--proxy-mode",
          "ipvs",
          "--src",
          `${client}:40000`,
          "--dst",
          "10.1.0.100:80",
          "--from",
          "external",
        ]);
        t.diagnostic(`trace --proxy-mode ipvs (live)\n${text.trim()}`);
        const predicted = (i: number) => {
          const accepted = traced[i]!.outcomes.filter((o) => o.verdict === "ACCEPT" && o.dnat !== undefined);
          return {
            shares: Object.fromEntries(accepted.map((o) => [o.dnat!.split(":")[0]!, o.probability])),
            masquerade: accepted.map((o) => o.masquerade),
            rejected: traced[i]!.outcomes.filter((o) => o.verdict === "REJECT"),
          };
        };
        for (const [i, dst, port] of [
          [0, "10.1.0.100", 80],
          [1, NODE_IP, 30300],
        ] as const) {
          const p = predicted(i);
          assert.deepEqual(
            p.shares,
            { [P3.ip]: 0.5, [P4.ip]: 0.5 },
            `trace of flow ${i + 1}: ${JSON.stringify(traced[i])}`,
          );
          assert.deepEqual(
            p.masquerade,
            [true, true],
            "an external client to a cluster IP or node port is masqueraded",
          );
          const replies = await repeat(8, () => ext().tcp(dst, port));
          const counts = tally(replies);
          assert.deepEqual(
            names(counts),
            [P3.name, P4.name].sort(),
            `real traffic to ${dst}:${port}: ${JSON.stringify(counts)}`,
          );
          for (const r of replies)
            assert.notEqual(
              r.reply?.split(" ")[1],
              client,
              "masqueraded: the pod does not see the client's address",
            );
        }
        const l = predicted(2);
        assert.deepEqual(l.shares, { [P5.ip]: 1 }, `eTP Local trace: ${JSON.stringify(traced[2])}`);
        assert.deepEqual(l.masquerade, [false], "eTP Local: the client's address is kept");
        const kept = await ext().tcp(NODE_IP, 30310);
        assert.equal(kept.reply, `${P5.name} ${client}`, `eTP Local real traffic: ${kept.error}`);
        const e = predicted(3);
        assert.deepEqual(e.shares, {}, "no endpoints: nothing is load-balanced");
        assert.equal(e.rejected.length, 1, `no endpoints: ${JSON.stringify(traced[3])}`);
        assert.equal(e.rejected[0]!.decidedBy?.table, "ipvs", "IPVS refuses it (ICMP port unreachable)");
        const refused = await ext().tcp("10.1.0.102", 80, 2000);
        assert.equal(refused.ok, false, `connected to a Service without endpoints: ${refused.reply}`);
        t.diagnostic(`no endpoints, real connection: ${refused.error}`);

        const explained = JSON.parse(
          await kpt([
            "explain",
            "--proxy-mode",
            "ipvs",
            "default/traced",
            "--manifests",
            daemon.dir,
            "-o",
            "json",
          ]),
        ) as {
          view: {
            frontends: { kind: string; action: string }[];
            endpoints: { endpoint: string; share: number; counters?: { packets: number } }[];
          };
        };
        const cluster = explained.view.endpoints.filter((x) => x.endpoint.endsWith(":80"));
        assert.deepEqual(
          [...new Set(cluster.map((x) => `${x.endpoint} ${x.share}`))].sort(),
          [`${P3.ip}:80 0.5`, `${P4.ip}:80 0.5`],
          `explain's endpoints: ${JSON.stringify(explained.view)}`,
        );
        assert.ok(
          cluster.some((x) => (x.counters?.packets ?? 0) > 0),
          "explain reads the real servers' packet counters (ipvsadm --stats)",
        );
        // `render` knows no node addresses, so the names it gives cover the cluster IP only.
        assert.deepEqual([...new Set(explained.view.frontends.map((f) => `${f.kind} ${f.action}`))].sort(), [
          "cluster IP load-balance",
        ]);
        const emptyText = await kpt([
          "explain",
          "--proxy-mode",
          "ipvs",
          "default/traced-empty",
          "--manifests",
          daemon.dir,
        ]);
        t.diagnostic(`explain --proxy-mode ipvs default/traced-empty\n${emptyText.trim()}`);
        assert.match(emptyText, /has no endpoints/);
        const textExplained = await kpt([
          "explain",
          "--proxy-mode",
          "ipvs",
          "default/traced",
          "--manifests",
          daemon.dir,
        ]);
        t.diagnostic(`explain --proxy-mode ipvs default/traced\n${textExplained.trim()}`);
        // The raw outputs, for test/fixtures/ipvs/vm-node.dump (recorded from this run).
        for (const argv of [
          ["ipvsadm", "-Ln", "--exact"],
          ["ipvsadm", "-Ln", "--exact", "--stats"],
          ["ipset", "save"],
          ["iptables-save", "-c"],
        ])
          t.diagnostic(`recorded: ${argv.join(" ")}\n${(await exec(argv)).stdout.trimEnd()}`);
      } finally {
        unlinkSync(flowsFile);
        for (const name of ["traced", "traced-local", "traced-empty"]) await retract(name);
      }
    },
  );

  test(
    "graceful termination, drained: the removed real server keeps weight 0 while its connection lives and is deleted once it ended",
    TIMEOUT,
    async (t) => {
      const spec: ServiceSpec = { name: "drain", clusterIP: "10.1.0.85", ports: tcp80() };
      await withService(spec, [{ ip: P3.ip }, { ip: P4.ip }], async () => {
        const opened = await ext().request("open", { conn: "d", host: "10.1.0.85", port: 80 });
        assert.ok(opened.ok, `open: ${opened.error}`);
        const gone = [P3, P4].find((p) => p.name === opened.reply!.split(" ")[0])!;
        const stays = [P3, P4].find((p) => p !== gone)!;
        let reset = false;
        try {
          await publish(spec, [{ ip: stays.ip }]);
          const rsOf = async () =>
            (virtualServer(await ipvsTable(), "TCP", "10.1.0.85:80")?.realServers ?? []).find(
              (r) => r.address === `${gone.ip}:80`,
            );
          const draining = await rsOf();
          assert.equal(draining?.weight, 0, "weight 0 while the connection lives");
          assert.equal(draining?.activeConn, 1, "the connection is IPVS's active one");
          const started = Date.now();
          await ext().request("reset", { conn: "d" });
          reset = true;
          const inactive = await rsOf();
          t.diagnostic(`after the reset: ${JSON.stringify(inactive)}`);
          const deleted = await waitFor(
            "the drained real server to be deleted",
            async () => ((await rsOf()) === undefined ? true : undefined),
            150_000,
            async () =>
              `\n${(await exec(["ipvsadm", "-Ln", "-t", "10.1.0.85:80"])).stdout}${daemon.logTail()}`,
          );
          assert.ok(deleted);
          t.diagnostic(`deleted ${Date.now() - started} ms after its connection was reset`);
          await ipvsText(t, ["-t", "10.1.0.85:80"]);
          const rs = virtualServer(await ipvsTable(), "TCP", "10.1.0.85:80")?.realServers ?? [];
          assert.deepEqual(
            rs.map((r) => [r.address, r.weight]),
            [[`${stays.ip}:80`, 1]],
            "the endpoint that stayed",
          );
        } finally {
          if (!reset) await ext().request("close", { conn: "d" });
        }
      });
    },
  );

  test(
    "KUBE-IPVS-OUT-FILTER: the node cannot reach an LB IP whose source ranges leave it out (-m ipvs), an allowed client can",
    TIMEOUT,
    async (t) => {
      const spec: ServiceSpec = {
        name: "lb-nonode",
        type: "LoadBalancer",
        clusterIP: "10.1.0.31",
        ports: tcp80(30120),
        loadBalancerIP: "203.0.113.30",
        sourceRanges: ["192.168.60.0/24"],
      };
      await withService(spec, [{ ip: P3.ip }], async () => {
        const save = (await exec(["iptables-save", "-t", "filter"])).stdout;
        const rule = save.split("\n").find((l) => l.startsWith("-A KUBE-IPVS-OUT-FILTER"));
        t.diagnostic(`the rule: ${rule}`);
        assert.match(
          rule ?? "",
          /-s 203\.0\.113\.30(\/32)? -m ipvs (--vproto 6 )?--vaddr 203\.0\.113\.30(\/32)? .*--vport 80 .*-j DROP/,
        );
        const allowed = await world().client("ext2").agent.tcp("203.0.113.30", 80);
        assert.equal(
          allowed.reply?.split(" ")[0],
          P3.name,
          `a client in the source ranges: ${allowed.error}`,
        );
        const fromNode = await tcpFromNode("203.0.113.30", 80, 3000);
        assert.equal(fromNode.ok, false, `the node reached the LB IP: ${fromNode.reply}`);
        const cluster = await tcpFromNode("10.1.0.31", 80, 3000);
        assert.equal(
          cluster.reply.split(" ")[0],
          P3.name,
          `the node reaches the ClusterIP: ${cluster.reply}`,
        );
        const counted = (await exec(["iptables-save", "-c", "-t", "filter"])).stdout
          .split("\n")
          .find((l) => l.includes("-A KUBE-IPVS-OUT-FILTER"));
        t.diagnostic(`with counters: ${counted}`);
        assert.match(counted ?? "", /^\[[1-9]\d*:\d+\]/, "the DROP rule counted the node's packets");
        const traced = JSON.parse(
          await kpt([
            "trace",
            "--proxy-mode",
            "ipvs",
            "--src",
            "203.0.113.30",
            "--dst",
            "203.0.113.30:80",
            "--from",
            "node",
            "-o",
            "json",
          ]),
        ) as { outcomes: (TracedOutcome & { decidedBy?: { chain: string } })[] };
        assert.deepEqual(
          traced.outcomes.map((o) => `${o.verdict} ${o.decidedBy?.chain}`),
          ["DROP KUBE-IPVS-OUT-FILTER"],
          `the tracer's prediction: ${JSON.stringify(traced.outcomes)}`,
        );
      });
    },
  );

  test("a daemon restart keeps established connections and the virtual servers", TIMEOUT, async () => {
    const opened = await ext().request("open", { conn: "r", host: SEED_CLUSTER_IP, port: 80 });
    assert.ok(opened.ok, `open: ${opened.error}`);
    const pod = opened.reply!.split(" ")[0]!;
    try {
      await daemon.stop();
      const during = await ext().request("send", { conn: "r", text: "daemon-down" });
      assert.equal(during.reply, `${pod} daemon-down`, `while the daemon is down: ${during.error}`);
      await daemon.start();
      const afterRestart = await ext().request("send", { conn: "r", text: "daemon-back" });
      assert.equal(afterRestart.reply, `${pod} daemon-back`, `after the restart: ${afterRestart.error}`);
      const fresh = await ext().tcp(SEED_CLUSTER_IP, 80);
      assert.ok(fresh.ok, `a new connection after the restart: ${fresh.error}${daemon.logTail()}`);
    } finally {
      await ext().request("close", { conn: "r" });
    }
  });

  test(
    "--cleanup leaves no virtual server, kube-ipvs0, KUBE- set or chain, and no foreign set is touched",
    TIMEOUT,
    async (t) => {
      await exec(["ipset", "create", "VM-FOREIGN", "hash:ip"]);
      try {
        await daemon.stop();
        const r = await cleanup("ipvs");
        t.diagnostic(`--cleanup exit ${r.code}`);
        assert.equal(r.code, 0, `--cleanup: ${r.stderr}`);
        assert.deepEqual(await ipvsTable(), [], "virtual servers left");
        const links = (await exec(["ip", "-o", "link", "show"])).stdout;
        assert.doesNotMatch(links, /kube-ipvs0/, "kube-ipvs0 left");
        const sets = (await exec(["ipset", "list", "-n"])).stdout.split("\n").filter((s) => s !== "");
        assert.deepEqual(sets, ["VM-FOREIGN"], "ipsets after --cleanup");
        for (const tool of ["iptables-save", "ip6tables-save"]) {
          assert.deepEqual(await kubeLeftovers(tool), [], `${tool}: what --cleanup left`);
        }
      } finally {
        await exec(["ipset", "destroy", "VM-FOREIGN"], { allowFail: true });
      }
    },
  );
});
