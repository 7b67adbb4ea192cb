/*
 * ipvs mode on a real IPVS kernel: one daemon (`--proxy-mode ipvs`, manifests folder) serves every
 * scenario; each scenario adds its own Service (its own IPs and ports) and removes it at the end.
 * Traffic is real TCP/UDP from the bench's client namespaces to the pods' agents, which answer with
 * their name and the client address they saw.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
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
