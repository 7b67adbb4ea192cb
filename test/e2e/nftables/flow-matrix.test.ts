/**
 * nftables mode's tracer against real traffic. One node programmed by the real daemon with
 * --proxy-mode nftables and Services of every kind; for each flow of the matrix,
 * `kube-proxy-ts trace --proxy-mode nftables` runs inside the node namespace against the live
 * table (nft -j list table ip kube-proxy), and the same flow is then sent for real. The endpoint
 * set, the verdict (refused = REJECT, timeout = DROP) and masquerading (the source address the
 * pod saw) must agree. `explain --proxy-mode nftables` on the live table must name the same
 * endpoints and count the connections just made.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { selfArgv } from "../../../src/cli/self.ts";
import { probe } from "../../../src/sandbox/client.ts";
import type { ProbeReport } from "../../../src/sandbox/client.ts";
import { SEED } from "../../../src/sandbox/seed.ts";
import type { Sandbox } from "../../../src/sandbox/topology.ts";
import {
  CLIENT,
  CLIENT2,
  CLIENT2_IP,
  DROP_MS,
  EXTERNAL_IP,
  LB_IP,
  NODE,
  OK_MS,
  podA,
  podB,
  serviceMatrixManifests,
  startServiceMatrix,
  stopServiceMatrix,
  tcp,
} from "../../support/service-matrix.ts";
import type { ServiceMatrix } from "../../support/service-matrix.ts";

const WEB = "127.0.0.1:10281";

const podByName = new Map([
  [podA.name, podA.ipv4],
  [podB.name, podB.ipv4],
]);

interface JsonOutcome {
  readonly probability: number;
  readonly verdict: "ACCEPT" | "DROP" | "REJECT" | "NOT UNDERSTOOD";
  readonly dnat?: string;
  readonly masquerade: boolean;
  readonly notUnderstood?: string;
}

interface Flow {
  readonly name: string;
  readonly from: string;
  readonly origin: "pod" | "node" | "external";
  readonly src: string;
  readonly dst: string;
  readonly port: number;
  readonly count: number;
  readonly timeoutMs: number;
}

interface Behaviour {
  readonly verdicts: string[];
  readonly endpoints: string[];
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

describe("nftables mode: trace predicts what real traffic does (live table, network namespaces)", () => {
  let matrix: ServiceMatrix | undefined;
  let sandbox: Sandbox;

  const cli = async (args: readonly string[]): Promise<string> =>
    (await sandbox.exec(NODE, selfArgv(args), { timeoutMs: 60_000 })).stdout;

  before(async () => {
    matrix = await startServiceMatrix(
      "kptnftflow",
      serviceMatrixManifests({ localType: "NodePort", extra: {} }),
      "nftables",
      ["--web-bind-address", WEB],
    );
    ({ sandbox } = matrix);
  });

  after(() => stopServiceMatrix(matrix));

  const flows = (): Flow[] => {
    const ok = { count: 24, timeoutMs: OK_MS };
    const dropped = { count: 2, timeoutMs: DROP_MS };
    // The node answers with ICMP errors at most once a second per peer: one request each.
    const refused = { count: 1, timeoutMs: 5_000 };
    const node = SEED.node.ipv4;
    const client = SEED.external.ipv4;
    const pod = { from: podB.name, origin: "pod" as const, src: podB.ipv4 };
    const ext = { from: CLIENT, origin: "external" as const, src: client };
    const fromNode = { from: NODE, origin: "node" as const, src: node };
    return [
      { name: "ClusterIP from a pod", ...pod, dst: SEED.clusterIP, port: 80, ...ok },
      { name: "ClusterIP from the node", ...fromNode, dst: SEED.clusterIP, port: 80, ...ok },
      { name: "NodePort from outside", ...ext, dst: node, port: SEED.nodePort, ...ok },
      { name: "NodePort from a pod", ...pod, dst: node, port: SEED.nodePort, ...ok },
      { name: "external IP from outside", ...ext, dst: EXTERNAL_IP, port: 8080, ...ok },
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
      { name: "NodePort, eTP Local, from outside", ...ext, dst: node, port: 31002, ...ok },
      { name: "NodePort, eTP Local, from a pod (short-circuit)", ...pod, dst: node, port: 31002, ...ok },
      { name: "NodePort, eTP Local, no local endpoint", ...ext, dst: node, port: 31003, ...dropped },
      {
        name: "ClusterIP, eTP Local, no local endpoint (cluster traffic unaffected)",
        ...pod,
        dst: "10.1.0.24",
        port: 80,
        ...ok,
      },
      {
        name: "ClusterIP, no endpoints",
        from: podA.name,
        origin: "pod",
        src: podA.ipv4,
        dst: "10.1.0.27",
        port: 80,
        ...refused,
      },
      { name: "NodePort, no endpoints", ...ext, dst: node, port: 31004, ...refused },
      {
        name: "ClusterIP, port not served",
        from: podA.name,
        origin: "pod",
        src: podA.ipv4,
        dst: SEED.clusterIP,
        port: 81,
        ...refused,
      },
      {
        name: "hairpin: a pod through its own Service",
        from: podA.name,
        origin: "pod",
        src: podA.ipv4,
        dst: "10.1.0.26",
        port: 80,
        ...ok,
      },
    ];
  };

  it("agrees with real traffic on endpoint set, verdict and masquerade for every flow", async () => {
    const mismatches: string[] = [];
    for (const flow of flows()) {
      const out = await cli([
        "trace",
        "--proxy-mode",
        "nftables",
        "--src",
        flow.src,
        "--dst",
        `${flow.dst}:${flow.port}`,
        "--from",
        flow.origin,
        "-o",
        "json",
      ]);
      const outcomes = (JSON.parse(out) as { outcomes: JsonOutcome[] }).outcomes;
      const lost = outcomes.filter((o) => o.verdict === "NOT UNDERSTOOD").map((o) => o.notUnderstood);
      assert.deepEqual(lost, [], `${flow.name}: every rule is understood`);
      const total = outcomes.reduce((sum, o) => sum + o.probability, 0);
      assert.ok(Math.abs(total - 1) < 1e-9, `${flow.name}: probabilities add up to ${total}`);
      const want = predicted(outcomes);
      const [report] = await probe(sandbox, flow.from, [
        tcp(flow.dst, flow.port, flow.count, flow.timeoutMs),
      ]);
      assert.ok(report !== undefined);
      const got = observed(report, flow.src);
      if (JSON.stringify(want) !== JSON.stringify(got))
        mismatches.push(`${flow.name}: tracer ${JSON.stringify(want)} vs traffic ${JSON.stringify(got)}`);
    }
    assert.deepEqual(mismatches, [], matrix?.daemon.logTail(10));
  });

  it("explain reads the live table: the seed Service's endpoints, shares and conntrack flows", async () => {
    const [report] = await probe(sandbox, podB.name, [tcp(SEED.clusterIP, 80, 8)]);
    assert.ok(report !== undefined && Object.keys(report.byPod).length > 0);
    const view = JSON.parse(
      await cli(["explain", "--proxy-mode", "nftables", `${SEED.namespace}/${SEED.service}`, "-o", "json"]),
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
      const script = `fetch("http://${WEB}${path}").then(async (r) => { if (!r.ok) throw new Error(r.status + " " + (await r.text())); process.stdout.write(await r.text()); })`;
      return JSON.parse(
        (await sandbox.exec(NODE, [process.execPath, "-e", script], { timeoutMs: 30_000 })).stdout,
      );
    };
    const services = (await get("/api/services")) as {
      services: { service: string; endpoints: { endpoint: string; probability: number }[] }[];
    };
    const nginx = services.services.find((s) => s.service === `${SEED.namespace}/${SEED.service}`);
    assert.deepEqual(
      nginx?.endpoints.map((e) => [e.endpoint.split(":")[0], e.probability]).sort(),
      [
        [podA.ipv4, 0.5],
        [podB.ipv4, 0.5],
      ].sort(),
    );
    assert.ok(services.services.some((s) => s.service === "default/web-lb"));
    const traced = (await get(`/api/trace?src=${SEED.external.ipv4}&dst=${LB_IP}:80&from=external`)) as {
      outcomes: { verdict: string; dnat?: string }[];
    };
    assert.deepEqual([...new Set(traced.outcomes.map((o) => o.verdict))], ["ACCEPT"]);
    assert.equal(traced.outcomes.length, 2);
  });
});
