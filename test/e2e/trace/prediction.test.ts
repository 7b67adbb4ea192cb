import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { selfArgv } from "../../../src/cli/self.ts";
import { probe } from "../../../src/sandbox/client.ts";
import type { ProbeReport } from "../../../src/sandbox/client.ts";
import { SEED } from "../../../src/sandbox/seed.ts";
import type { Sandbox } from "../../../src/sandbox/topology.ts";
import { sleep } from "../../support/daemon.ts";
import type { ProxyDaemon } from "../../support/daemon.ts";
import {
  CLIENT,
  CLIENT2,
  CLIENT2_IP,
  DROP_MS,
  EXTERNAL_IP,
  LB_IP,
  NODE,
  OK_MS,
  onNode,
  podA,
  podB,
  port80,
  serviceMatrixManifests,
  servicePair,
  startServiceMatrix,
  stopServiceMatrix,
  tcp,
  TRAFFIC_MODES,
} from "../../support/service-matrix.ts";
import type { Manifests, ServiceMatrix } from "../../support/service-matrix.ts";

/*
 * The tracer's prediction against what real traffic does, in iptables mode and in nftables mode.
 * One node programmed by the real daemon with Services of every kind; for each flow,
 * `kube-proxy-ts trace --proxy-mode MODE` runs inside the node namespace against the live kernel
 * (iptables-save -c; nft -j list table ip kube-proxy), and the same flow is then sent for real.
 * The endpoint set, the verdict (refused = REJECT, timeout = DROP) and masquerading (the source
 * address the pod saw) must agree, and so must session affinity. iptables mode: on two flows the
 * kernel's own trace (-j TRACE read with xtables-monitor --trace) must show the same rules, in the
 * same order, as the tracer's path; `explain` counts DNAT packets and conntrack entries and names
 * the rule that drops or rejects. nftables mode: `explain` reads the live table, and the web view
 * serves it. The one flow that differs by mode is upstream's: nftables mode rejects a port a live
 * ClusterIP does not serve, iptables mode has no rule for it.
 */

const WEB_ADDRESS = "127.0.0.1:10281";

const podByName = new Map([
  [podA.name, podA.ipv4],
  [podB.name, podB.ipv4],
]);

function manifests(): Manifests {
  return serviceMatrixManifests({
    localType: "NodePort",
    // Reached only by the explain test, so its counters and conntrack entries are that test's own.
    extra: servicePair("count", { name: "web-count", clusterIP: "10.1.0.28", ports: port80 }, [
      onNode(podA),
      onNode(podB),
    ]),
  });
}

interface JsonStep {
  readonly kind: string;
  readonly table?: string;
  readonly chain?: string;
  readonly rule?: string;
  readonly effect: string;
}

interface JsonOutcome {
  readonly probability: number;
  readonly verdict: "ACCEPT" | "DROP" | "REJECT" | "NOT UNDERSTOOD";
  readonly notUnderstood?: string;
  readonly dnat?: string;
  readonly masquerade: boolean;
  readonly assumptions: readonly string[];
  readonly path: readonly JsonStep[];
}

interface Flow {
  readonly name: string;
  /** Sandbox member the real traffic leaves from. */
  readonly from: string;
  readonly origin: "pod" | "node" | "external";
  readonly src: string;
  readonly dst: string;
  readonly port: number;
  readonly count: number;
  readonly timeoutMs: number;
  readonly traceArgs?: readonly string[];
}

/** What a set of outcomes amounts to, in terms real traffic can show. */
interface Behaviour {
  readonly verdicts: string[];
  readonly endpoints: string[];
  /** For accepted traffic: was the source rewritten (true), kept (false), or both seen. */
  readonly masquerade: boolean[];
}

function predicted(outcomes: readonly JsonOutcome[]): Behaviour {
  const accepted = outcomes.filter((o) => o.verdict === "ACCEPT");
  return {
    verdicts: [...new Set(outcomes.map((o) => o.verdict))].sort(),
    endpoints: [...new Set(accepted.map((o) => (o.dnat ?? "").split(":")[0] ?? ""))].sort(),
    masquerade: [...new Set(accepted.map((o) => o.masquerade))].sort(),
  };
}

function observed(report: ProbeReport, src: string): Behaviour {
  const verdicts = new Set<string>();
  if (Object.keys(report.byPod).length > 0) verdicts.add("ACCEPT");
  if ((report.errors.refused ?? 0) > 0) verdicts.add("REJECT");
  if ((report.errors.timeout ?? 0) > 0) verdicts.add("DROP");
  const other = Object.keys(report.errors).filter((k) => k !== "refused" && k !== "timeout");
  assert.deepEqual(other, [], `unexpected errors: ${JSON.stringify(report.results.slice(0, 3))}`);
  return {
    verdicts: [...verdicts].sort(),
    endpoints: Object.keys(report.byPod)
      .map((pod) => podByName.get(pod) ?? pod)
      .sort(),
    masquerade: [...new Set(Object.keys(report.byClient).map((client) => client !== src))].sort(),
  };
}

for (const mode of TRAFFIC_MODES)
  describe(`trace predicts what real traffic does (${mode} mode, live kernel, network namespaces)`, () => {
    let matrix: ServiceMatrix | undefined;
    let sandbox: Sandbox;
    let daemon: ProxyDaemon;

    const cli = async (args: readonly string[]): Promise<string> =>
      (await sandbox.exec(NODE, selfArgv(args), { timeoutMs: 60_000 })).stdout;

    const trace = async (flow: Flow): Promise<JsonOutcome[]> => {
      const out = await cli([
        "trace",
        "--proxy-mode",
        mode,
        "--src",
        flow.src,
        "--dst",
        `${flow.dst}:${flow.port}`,
        "--from",
        flow.origin,
        "-o",
        "json",
        ...(flow.traceArgs ?? []),
      ]);
      return (JSON.parse(out) as { outcomes: JsonOutcome[] }).outcomes;
    };

    const send = async (flow: Flow): Promise<ProbeReport> => {
      const [report] = await probe(sandbox, flow.from, [
        tcp(flow.dst, flow.port, flow.count, flow.timeoutMs),
      ]);
      assert.ok(report !== undefined);
      return report;
    };

    before(async () => {
      matrix = await startServiceMatrix(
        mode === "iptables" ? "kpttrace" : "kpttracen",
        manifests(),
        mode,
        mode === "nftables" ? ["--web-bind-address", WEB_ADDRESS] : [],
      );
      ({ sandbox, daemon } = matrix);
    });

    after(() => stopServiceMatrix(matrix));

    const flows = (): Flow[] => {
      const ok = { count: 24, timeoutMs: OK_MS };
      const dropped = { count: 2, timeoutMs: DROP_MS };
      // The node answers with ICMP errors at most once a second per peer: one request each.
      const refused = { count: 1, timeoutMs: 5_000 };
      const node = SEED.node.ipv4;
      const pod = { from: podB.name, origin: "pod" as const, src: podB.ipv4 };
      const podSelf = { from: podA.name, origin: "pod" as const, src: podA.ipv4 };
      const ext = { from: CLIENT, origin: "external" as const, src: SEED.external.ipv4 };
      const fromNode = { from: NODE, origin: "node" as const, src: node };
      const all: Flow[] = [
        { name: "ClusterIP from a pod", ...pod, dst: SEED.clusterIP, port: 80, ...ok },
        { name: "ClusterIP from the node", ...fromNode, dst: SEED.clusterIP, port: 80, ...ok },
        { name: "NodePort from outside", ...ext, dst: node, port: SEED.nodePort, ...ok },
        { name: "NodePort from a pod", ...pod, dst: node, port: SEED.nodePort, ...ok },
        { name: "external IP", ...ext, dst: EXTERNAL_IP, port: 8080, ...ok },
        { name: "external IP from a pod", ...pod, dst: EXTERNAL_IP, port: 8080, ...ok },
        { name: "LB IP, source range allowed", ...ext, dst: LB_IP, port: 80, ...ok },
        {
          name: "LB IP, source range denied",
          from: CLIENT2,
          origin: "external",
          src: CLIENT2_IP,
          dst: LB_IP,
          port: 80,
          ...dropped,
        },
        { name: "NodePort, eTP Local", ...ext, dst: node, port: 31002, ...ok },
        { name: "NodePort, eTP Local, from a pod (short-circuit)", ...pod, dst: node, port: 31002, ...ok },
        { name: "NodePort, eTP Local, no local endpoint", ...ext, dst: node, port: 31003, ...dropped },
        {
          name: "ClusterIP, eTP Local, no local endpoint (cluster traffic unaffected)",
          ...pod,
          dst: "10.1.0.24",
          port: 80,
          ...ok,
        },
        { name: "ClusterIP, no endpoints", ...podSelf, dst: "10.1.0.27", port: 80, ...refused },
        { name: "NodePort, no endpoints", ...ext, dst: node, port: 31004, ...refused },
        { name: "hairpin: a pod through its own Service", ...podSelf, dst: "10.1.0.26", port: 80, ...ok },
      ];
      // Upstream's nftables mode rejects a port a live ClusterIP does not serve; iptables mode has
      // no rule for it (the packet goes on to the node's routes).
      if (mode === "nftables")
        all.push({
          name: "ClusterIP, port not served (nftables mode only)",
          ...podSelf,
          dst: SEED.clusterIP,
          port: 81,
          ...refused,
        });
      return all;
    };

    it("predicts endpoint set, verdict and masquerade for every flow of the matrix", async () => {
      const mismatches: string[] = [];
      for (const flow of flows()) {
        const outcomes = await trace(flow);
        const lost = outcomes.filter((o) => o.verdict === "NOT UNDERSTOOD").map((o) => o.notUnderstood);
        assert.deepEqual(lost, [], `${flow.name}: every rule is understood`);
        const want = predicted(outcomes);
        const got = observed(await send(flow), flow.src);
        const total = outcomes.reduce((sum, o) => sum + o.probability, 0);
        assert.ok(Math.abs(total - 1) < 1e-9, `${flow.name}: probabilities add up to ${total}`);
        if (JSON.stringify(want) !== JSON.stringify(got))
          mismatches.push(`${flow.name}: tracer ${JSON.stringify(want)} vs traffic ${JSON.stringify(got)}`);
      }
      assert.deepEqual(mismatches, [], daemon.logTail(10));
    });

    it(
      mode === "iptables"
        ? "session affinity: the tracer offers both endpoints to a new client; the kernel then sticks to one"
        : "session affinity: the tracer offers both endpoints to a new client; the kernel sticks to one, which the tracer then reads from the affinity set",
      async () => {
        const flow: Flow = {
          name: "affinity",
          from: CLIENT,
          origin: "external",
          src: SEED.external.ipv4,
          dst: "10.1.0.22",
          port: 80,
          count: 20,
          timeoutMs: OK_MS,
          traceArgs: ["--affinity", "new-client"],
        };
        const fresh = predicted(await trace(flow));
        assert.deepEqual(fresh, {
          verdicts: ["ACCEPT"],
          endpoints: [podA.ipv4, podB.ipv4].sort(),
          masquerade: [true],
        });
        const got = observed(await send(flow), flow.src);
        assert.equal(got.endpoints.length, 1, `affinity must hold: ${JSON.stringify(got)}`);
        assert.ok(fresh.endpoints.includes(got.endpoints[0] ?? ""));
        const known = await trace({ ...flow, traceArgs: [] });
        if (mode === "iptables") {
          // Without the assumption the tracer says which rule depends on the kernel's affinity list.
          assert.ok(
            known.some((o) =>
              o.assumptions.some((a) => /recent --rcheck .*affinity state is not known/.test(a)),
            ),
            JSON.stringify(known.map((o) => o.assumptions)),
          );
        } else {
          // nftables mode's affinity sets are in the listing: the client's entry decides.
          assert.deepEqual(predicted(known).endpoints, got.endpoints, JSON.stringify(known));
        }
      },
    );

    if (mode === "iptables") {
      it("an ESTABLISHED packet takes the conntrack short-cut to the DNAT its connection got", async () => {
        const out = await cli([
          "trace",
          "--src",
          `${SEED.external.ipv4}:40000`,
          "--dst",
          `${SEED.node.ipv4}:31002`,
          "--from",
          "external",
          "--state",
          "ESTABLISHED",
        ]);
        assert.match(
          out,
          /conntrack short-cut: established flow, nat PREROUTING not traversed.*destination rewritten to 10\.244\.0\.9:80/,
        );
      });

      /**
       * Rules the kernel reports per traced packet, as `table -A chain …`. nft keeps one trace id
       * for a whole connection, so a packet's trace ends where the next one enters raw PREROUTING.
       */
      function kernelPackets(monitor: string): string[][] {
        const packets: string[][] = [];
        for (const line of monitor.split("\n")) {
          const m =
            /^\s*TRACE: \d+ [0-9a-f]+ (\w+):([^:]+):rule:0x[0-9a-f]+:\S+\s+-[46] -t \w+ (-A .*)$/.exec(line);
          if (m === null) continue;
          if (m[1] === "raw" && m[2] === "PREROUTING") packets.push([]);
          packets.at(-1)?.push(`${m[1]} ${(m[3] ?? "").trim()}`);
        }
        assert.ok(packets.length > 0, `xtables-monitor printed no TRACE line:\n${monitor}`);
        return packets;
      }

      /** Rules the tracer says matched on one path, same form. */
      function tracerPath(outcome: JsonOutcome): string[] {
        return outcome.path
          .filter((s) => s.kind === "rule" && s.effect.startsWith("matched"))
          .map((s) => `${s.table} ${s.rule ?? ""}`);
      }

      async function kernelTrace(flow: Flow): Promise<{
        kernel: string[][];
        outcomes: JsonOutcome[];
        established: JsonOutcome[];
        report: ProbeReport;
      }> {
        const rule = ["-s", flow.src, "-d", flow.dst, "-p", "tcp", "--dport", String(flow.port)];
        // Not `--ctstate NEW`: raw runs before conntrack, so nothing has a state there yet. Every
        // packet of the flow is traced: the SYN first, then the connection's later packets.
        const traceRule = [...rule, "-j", "TRACE"];
        await sandbox.exec(NODE, ["iptables", "-t", "raw", "-I", "PREROUTING", ...traceRule]);
        try {
          // The tracer reads the ruleset with the TRACE rule in it, so both see the same rules.
          const outcomes = await trace(flow);
          const established = await trace({ ...flow, traceArgs: ["--state", "ESTABLISHED"] });
          const monitor = sandbox.spawn(NODE, [
            "stdbuf",
            "-oL",
            "timeout",
            "20",
            "xtables-monitor",
            "--trace",
          ]);
          try {
            // xtables-monitor prints nothing once subscribed: give it a moment before the packet.
            await sleep(1_000);
            assert.ok(monitor.running, `xtables-monitor exited: ${monitor.stderr}`);
            const report = await send({ ...flow, count: 1 });
            await sleep(500);
            return { kernel: kernelPackets(monitor.stdout), outcomes, established, report };
          } finally {
            await monitor.stop();
          }
        } finally {
          await sandbox.exec(NODE, ["iptables", "-t", "raw", "-D", "PREROUTING", ...traceRule]);
        }
      }

      it("the kernel's own trace (xtables-monitor --trace) shows the tracer's rule path: NodePort to an endpoint", async () => {
        const flow = flows().find((f) => f.name === "NodePort from outside") as Flow;
        const { kernel, outcomes, established, report } = await kernelTrace(flow);
        const pod = Object.keys(report.byPod)[0];
        assert.ok(pod !== undefined, JSON.stringify(report.results));
        const endpoint = `${podByName.get(pod) ?? ""}:80`;
        const taken = outcomes.find((o) => o.dnat === endpoint);
        assert.ok(taken !== undefined, `tracer has no outcome for ${endpoint}`);
        const [syn, later] = kernel;
        assert.deepEqual(tracerPath(taken), syn);
        assert.ok(
          syn?.some((r) => r.startsWith("nat -A KUBE-NODEPORTS")) && syn.some((r) => r.includes("DNAT")),
        );
        // The connection's next packet skips nat in the kernel; the tracer's ESTABLISHED path says so too.
        assert.ok(later !== undefined, `only one packet traced: ${JSON.stringify(kernel)}`);
        const same = established.find((o) => o.dnat === endpoint);
        assert.ok(same !== undefined, JSON.stringify(established.map((o) => o.dnat)));
        assert.deepEqual(tracerPath(same), later);
        assert.ok(!later.some((r) => r.startsWith("nat ")), JSON.stringify(later));
      });

      it("the kernel's own trace shows the tracer's rule path: load-balancer source range denied (DROP)", async () => {
        const flow = flows().find((f) => f.name === "LB IP, source range denied") as Flow;
        const { kernel: packets, outcomes } = await kernelTrace(flow);
        const kernel = packets[0] ?? [];
        assert.equal(outcomes.length, 1);
        const only = outcomes[0] as JsonOutcome;
        assert.equal(only.verdict, "DROP");
        assert.deepEqual(tracerPath(only), kernel);
        assert.match(kernel.at(-1) ?? "", /^filter -A KUBE-PROXY-FIREWALL .* -j DROP$/);
      });

      it("explain: DNAT counters and conntrack entries per endpoint equal the connections each pod answered", async () => {
        const report = (await probe(sandbox, podB.name, [tcp("10.1.0.28", 80, 16)]))[0];
        assert.ok(report !== undefined);
        assert.deepEqual(report.errors, {});
        const ex = JSON.parse(await cli(["explain", "default/web-count", "-o", "json"])) as {
          endpoints: { endpoint: string; probability: number; counters?: { packets: number } }[];
          conntrack: { endpoint: string; flows: number }[];
          whyNoTraffic: string[];
        };
        const answered = (ip: string): number =>
          Object.entries(report.byPod)
            .filter(([pod]) => podByName.get(pod) === ip)
            .reduce((sum, [, n]) => sum + n, 0);
        assert.deepEqual(
          ex.endpoints.map((e) => [e.endpoint, e.probability, e.counters?.packets]).sort(),
          [podA.ipv4, podB.ipv4].sort().map((ip) => [`${ip}:80`, 0.5, answered(ip)]),
        );
        assert.deepEqual(
          ex.conntrack.map((c) => [c.endpoint, c.flows]).sort(),
          [podA.ipv4, podB.ipv4].sort().map((ip) => [`${ip}:80`, answered(ip)]),
        );
        assert.deepEqual(ex.whyNoTraffic, []);
      });

      it("explain says why a Service gets no traffic, naming the rule the kernel lists at that number", async () => {
        const text = await cli(["explain", "default/web-empty"]);
        const m =
          /default\/web-empty has no endpoints: packets to 10\.1\.0\.27:80 \(tcp\) are REJECTed in filter KUBE-SERVICES rule (\d+)/.exec(
            text,
          );
        assert.ok(m !== null, text);
        const listing = (
          await sandbox.exec(NODE, ["iptables", "-t", "filter", "-nL", "KUBE-SERVICES", "--line-numbers"])
        ).stdout;
        const row = listing.split("\n").find((l) => l.startsWith(`${m[1]} `));
        assert.match(row ?? "", /REJECT .*10\.1\.0\.27 .*default\/web-empty has no endpoints/, listing);

        const lb = await cli(["explain", "default/web-lb"]);
        assert.match(
          lb,
          new RegExp(
            `load-balancer IP ${LB_IP.replaceAll(".", "\\.")}:80 \\(tcp\\) accepts only sources in ${SEED.external.ipv4.replaceAll(".", "\\.")}/32`,
          ),
        );
        const remote = await cli(["explain", "default/web-remote"]);
        assert.match(
          remote,
          /has no local endpoints on this node: packets to node port 31003 \(tcp\) on any local address are DROPped in filter KUBE-EXTERNAL-SERVICES rule \d+/,
        );
      });
    }

    if (mode === "nftables") {
      it("explain reads the live table: the seed Service's endpoints, shares and conntrack flows", async () => {
        const [report] = await probe(sandbox, podB.name, [tcp(SEED.clusterIP, 80, 8)]);
        assert.ok(report !== undefined && Object.keys(report.byPod).length > 0);
        const view = JSON.parse(
          await cli([
            "explain",
            "--proxy-mode",
            "nftables",
            `${SEED.namespace}/${SEED.service}`,
            "-o",
            "json",
          ]),
        ) as {
          table: string;
          view: {
            endpoints: { endpoint: string; share: number }[];
            frontends: { kind: string; action: string }[];
          };
          conntrack: { endpoint: string; flows: number }[];
        };
        assert.equal(view.table, "table ip kube-proxy");
        assert.deepEqual(
          view.view.endpoints.map((e) => [e.endpoint.split(":")[0], e.share]).sort(),
          [
            [podA.ipv4, 0.5],
            [podB.ipv4, 0.5],
          ].sort(),
        );
        assert.deepEqual(view.view.frontends.map((f) => [f.kind, f.action]).sort(), [
          ["cluster IP", "load-balance"],
          ["node port", "load-balance"],
        ]);
        const flows = view.conntrack.reduce((sum, c) => sum + c.flows, 0);
        assert.ok(
          flows >= 1,
          `conntrack entries for the connections just made: ${JSON.stringify(view.conntrack)}`,
        );
      });

      it("the web view serves the live table: Services with their endpoints, and a trace", async () => {
        const get = async (path: string): Promise<unknown> => {
          const script = `fetch("http://${WEB_ADDRESS}${path}").then(async (r) => { if (!r.ok) throw new Error(r.status + " " + (await r.text())); process.stdout.write(await r.text()); })`;
          return JSON.parse(
            (await sandbox.exec(NODE, [process.execPath, "-e", script], { timeoutMs: 30_000 })).stdout,
          );
        };
        const services = (await get("/api/services?limit=500")) as {
          services: { family: number; service: string }[];
        };
        const names = services.services.map((s) => s.service);
        assert.ok(names.includes(`${SEED.namespace}/${SEED.service}`));
        assert.ok(names.includes("default/web-lb"));
        const nginx = (await get(`/api/service?service=4/${SEED.namespace}/${SEED.service}`)) as {
          endpoints: { endpoint: string; probability: number }[];
        };
        assert.deepEqual(
          nginx.endpoints.map((e) => [e.endpoint.split(":")[0], e.probability]).sort(),
          [
            [podA.ipv4, 0.5],
            [podB.ipv4, 0.5],
          ].sort(),
        );
        const traced = (await get(`/api/trace?src=${SEED.external.ipv4}&dst=${LB_IP}:80&from=external`)) as {
          outcomes: { verdict: string; dnat?: string }[];
        };
        assert.deepEqual([...new Set(traced.outcomes.map((o) => o.verdict))], ["ACCEPT"]);
        assert.equal(traced.outcomes.length, 2);
      });
    }
  });
