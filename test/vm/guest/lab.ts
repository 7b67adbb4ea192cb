/*
 * The guest's test bench, inside the VM (whose root namespace is the Kubernetes node: the daemon,
 * IPVS and kube-ipvs0 live there). Each pod and each external client is a network namespace with
 * one veth pair to the node and one long-lived agent (agent.ts). Pods have a /32 address and a
 * default route via the pod gateway 10.244.0.1 that every pod veth carries on the node side;
 * client `ext` sits on the node's LAN 192.168.50.0/24 (node IP 192.168.50.1), client `ext2` on a
 * second LAN 192.168.60.0/24. Every command is an argv array with a timeout; every wait is bounded.
 */
import { spawn } from "node:child_process";
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { get } from "node:http";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const AGENT = fileURLToPath(new URL("./agent.js", import.meta.url));
const PROJECT = fileURLToPath(new URL("..", import.meta.url));
const IP = "/sbin/ip";

export const NODE_NAME = "node-1";
export const NODE_IP = "192.168.50.1";
export const POD_GATEWAY = "10.244.0.1";
export const CLUSTER_CIDR = "10.244.0.0/16";

export interface ExecResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs argv (no shell) with a bound; throws on a non-zero exit unless `allowFail`. */
export function exec(
  argv: readonly string[],
  options: { timeoutMs?: number; allowFail?: boolean; input?: string } = {},
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 30_000);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code !== 0 && options.allowFail !== true) {
        reject(new Error(`${argv.join(" ")} exited ${code}: ${stderr.trim()}`));
      } else {
        resolve({ code, stdout, stderr });
      }
    });
    // A program that does not read its input may exit before the write: that is no failure.
    child.stdin.on("error", () => undefined);
    child.stdin.end(options.input ?? "");
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` every 200 ms until it returns a value, at most `timeoutMs`; says what it awaited. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs: number,
  context: () => Promise<string> | string = () => "",
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() >= deadline) break;
    await sleep(200);
  }
  const cause = last instanceof Error ? `\nlast error: ${last.message}` : "";
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}${await context()}`);
}

export interface AgentReply {
  readonly ok: boolean;
  readonly error?: string;
  readonly reply?: string;
  readonly counts?: Record<string, number>;
  readonly failures?: string[];
}

/** One agent process in a namespace, driven by JSON lines. */
export class Agent {
  private nextId = 1;
  private readonly pending = new Map<number, (reply: AgentReply) => void>();
  private stderr = "";
  private exited = false;

  private constructor(
    readonly name: string,
    private readonly child: ChildProcessWithoutNullStreams,
  ) {
    child.stderr.on("data", (d: Buffer) => (this.stderr += d.toString()));
    child.on("close", () => {
      this.exited = true;
      for (const resolve of this.pending.values())
        resolve({ ok: false, error: `agent exited: ${this.stderr.trim()}` });
      this.pending.clear();
    });
    createInterface({ input: child.stdout }).on("line", (line) => {
      let message: AgentReply & { id?: number };
      try {
        message = JSON.parse(line) as AgentReply & { id?: number };
      } catch {
        return;
      }
      const resolve = this.pending.get(message.id ?? -1);
      this.pending.delete(message.id ?? -1);
      resolve?.(message);
    });
  }

  static async start(netns: string, name: string): Promise<Agent> {
    const child = spawn(IP, ["netns", "exec", netns, process.execPath, AGENT, name], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    const agent = new Agent(name, child);
    const ready = await agent.await(0, 120_000);
    if (!ready.ok) throw new Error(`agent ${name} did not start: ${ready.error}`);
    return agent;
  }

  private await(id: number, timeoutMs: number): Promise<AgentReply> {
    return new Promise((resolve) => {
      if (this.exited) return resolve({ ok: false, error: `agent exited: ${this.stderr.trim()}` });
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ ok: false, error: `agent ${this.name} gave no answer in ${timeoutMs} ms` });
      }, timeoutMs);
      this.pending.set(id, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
    });
  }

  request(op: string, fields: Record<string, unknown> = {}): Promise<AgentReply> {
    const id = this.nextId++;
    const timeoutMs = typeof fields.timeoutMs === "number" ? fields.timeoutMs : 3000;
    const answer = this.await(id, timeoutMs + 10_000);
    this.child.stdin.write(`${JSON.stringify({ id, op, ...fields })}\n`);
    return answer;
  }

  /** One TCP connection: the answering pod's greeting (`POD PEER-IP`), or the error kind. */
  tcp(host: string, port: number, timeoutMs = 3000): Promise<AgentReply> {
    return this.request("tcp", { host, port, timeoutMs });
  }

  udp(
    host: string,
    port: number,
    options: { timeoutMs?: number; sourcePort?: number } = {},
  ): Promise<AgentReply> {
    return this.request("udp", {
      host,
      port,
      timeoutMs: options.timeoutMs ?? 3000,
      sourcePort: options.sourcePort,
    });
  }

  stop(): void {
    this.child.stdin.end();
    setTimeout(() => this.child.kill("SIGKILL"), 2000).unref();
  }
}

export interface Pod {
  readonly name: string;
  readonly ip: string;
  readonly netns: string;
  readonly veth: string;
  readonly agent: Agent;
}

export interface Client {
  readonly name: string;
  readonly ip: string;
  readonly netns: string;
  readonly agent: Agent;
}

/** Ports every pod serves. */
export const POD_TCP_PORT = 80;
export const POD_UDP_PORT = 53;

export class Lab {
  readonly pods = new Map<string, Pod>();
  readonly clients = new Map<string, Client>();
  private readonly netns: string[] = [];
  private readonly links: string[] = [];
  private seq = 0;

  private async makeNetns(name: string): Promise<string> {
    const netns = `vm-${name}`;
    await exec([IP, "netns", "add", netns]);
    this.netns.push(netns);
    await exec([IP, "-n", netns, "link", "set", "lo", "up"]);
    return netns;
  }

  /** A pod namespace at `ip`, routed from the node, with an agent serving TCP and UDP. */
  async addPod(name: string, ip: string): Promise<Pod> {
    const netns = await this.makeNetns(name);
    const veth = `vp${this.seq++}`;
    await exec([IP, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns]);
    this.links.push(veth);
    await exec([IP, "addr", "add", `${POD_GATEWAY}/32`, "dev", veth]);
    await exec([IP, "link", "set", veth, "up"]);
    await exec([IP, "-n", netns, "addr", "add", `${ip}/32`, "dev", "eth0"]);
    await exec([IP, "-n", netns, "link", "set", "eth0", "up"]);
    await exec([IP, "-n", netns, "route", "add", POD_GATEWAY, "dev", "eth0"]);
    await exec([IP, "-n", netns, "route", "add", "default", "via", POD_GATEWAY, "dev", "eth0"]);
    await exec([IP, "route", "add", `${ip}/32`, "dev", veth]);
    const agent = await Agent.start(netns, name);
    const served = await agent.request("serve", { tcp: [POD_TCP_PORT], udp: [POD_UDP_PORT] });
    if (!served.ok) throw new Error(`pod ${name} could not serve: ${served.error}`);
    const pod = { name, ip, netns, veth, agent };
    this.pods.set(name, pod);
    return pod;
  }

  /** A client on its own LAN `lan`.0/24 with the node at .1 and the client at .100. */
  async addClient(name: string, lan: string): Promise<Client> {
    const netns = await this.makeNetns(name);
    const veth = `vl${this.seq++}`;
    await exec([IP, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns]);
    this.links.push(veth);
    await exec([IP, "addr", "add", `${lan}.1/24`, "dev", veth]);
    await exec([IP, "link", "set", veth, "up"]);
    const ip = `${lan}.100`;
    await exec([IP, "-n", netns, "addr", "add", `${ip}/24`, "dev", "eth0"]);
    await exec([IP, "-n", netns, "link", "set", "eth0", "up"]);
    await exec([IP, "-n", netns, "route", "add", "default", "via", `${lan}.1`]);
    const client = { name, ip, netns, agent: await Agent.start(netns, name) };
    this.clients.set(name, client);
    return client;
  }

  pod(name: string): Pod {
    const pod = this.pods.get(name);
    if (pod === undefined) throw new Error(`no pod ${name}`);
    return pod;
  }

  client(name: string): Client {
    const client = this.clients.get(name);
    if (client === undefined) throw new Error(`no client ${name}`);
    return client;
  }

  async dispose(): Promise<void> {
    for (const p of this.pods.values()) p.agent.stop();
    for (const c of this.clients.values()) c.agent.stop();
    for (const link of this.links) await exec([IP, "link", "del", link], { allowFail: true });
    for (const netns of this.netns) await exec([IP, "netns", "del", netns], { allowFail: true });
  }
}

/*
 * Kubernetes objects for the manifests folder (JSON is YAML), spelled as the API server returns
 * them.
 */

export type KubeObject = Record<string, unknown>;

export interface PortSpec {
  readonly name?: string;
  readonly port: number;
  readonly protocol?: "TCP" | "UDP";
  readonly targetPort?: number;
  readonly nodePort?: number;
}

export interface ServiceSpec {
  readonly name: string;
  readonly clusterIP: string;
  readonly type?: "ClusterIP" | "NodePort" | "LoadBalancer";
  readonly ports: readonly PortSpec[];
  readonly externalIPs?: readonly string[];
  readonly loadBalancerIP?: string;
  readonly sourceRanges?: readonly string[];
  readonly externalTrafficPolicy?: "Cluster" | "Local";
  readonly affinitySeconds?: number;
  readonly healthCheckNodePort?: number;
}

export function service(s: ServiceSpec): KubeObject {
  const type = s.type ?? "ClusterIP";
  const external = type !== "ClusterIP" || (s.externalIPs?.length ?? 0) > 0;
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: s.name, namespace: "default" },
    spec: {
      type,
      clusterIP: s.clusterIP,
      clusterIPs: [s.clusterIP],
      ipFamilies: ["IPv4"],
      ipFamilyPolicy: "SingleStack",
      internalTrafficPolicy: "Cluster",
      ...(external ? { externalTrafficPolicy: s.externalTrafficPolicy ?? "Cluster" } : {}),
      ...(s.externalIPs === undefined ? {} : { externalIPs: s.externalIPs }),
      ...(s.sourceRanges === undefined ? {} : { loadBalancerSourceRanges: s.sourceRanges }),
      ...(s.healthCheckNodePort === undefined ? {} : { healthCheckNodePort: s.healthCheckNodePort }),
      sessionAffinity: s.affinitySeconds === undefined ? "None" : "ClientIP",
      ...(s.affinitySeconds === undefined
        ? {}
        : { sessionAffinityConfig: { clientIP: { timeoutSeconds: s.affinitySeconds } } }),
      ports: s.ports.map((p) => ({
        ...(p.name === undefined ? {} : { name: p.name }),
        port: p.port,
        protocol: p.protocol ?? "TCP",
        targetPort: p.targetPort ?? p.port,
        ...(p.nodePort === undefined ? {} : { nodePort: p.nodePort }),
      })),
    },
    ...(s.loadBalancerIP === undefined
      ? {}
      : { status: { loadBalancer: { ingress: [{ ip: s.loadBalancerIP }] } } }),
  };
}

export interface EndpointSpec {
  readonly ip: string;
  readonly node?: string;
  readonly ready?: boolean;
  readonly serving?: boolean;
  readonly terminating?: boolean;
}

export function endpointSlice(
  serviceName: string,
  endpoints: readonly EndpointSpec[],
  ports: readonly PortSpec[],
): KubeObject {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: `${serviceName}-abcde`,
      namespace: "default",
      labels: {
        "kubernetes.io/service-name": serviceName,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
      },
    },
    addressType: "IPv4",
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true, serving: e.serving ?? true, terminating: e.terminating ?? false },
      nodeName: e.node ?? NODE_NAME,
    })),
    ports: ports.map((p) => ({
      ...(p.name === undefined ? { name: "" } : { name: p.name }),
      port: p.targetPort ?? p.port,
      protocol: p.protocol ?? "TCP",
    })),
  };
}

export function nodeObject(): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: NODE_NAME, labels: { "kubernetes.io/hostname": NODE_NAME } },
    spec: { podCIDR: "10.244.0.0/24", podCIDRs: ["10.244.0.0/24"] },
    status: {
      addresses: [
        { type: "InternalIP", address: NODE_IP },
        { type: "Hostname", address: NODE_NAME },
      ],
    },
  };
}

/** The proxy modes the compiled project can run (its own registry says). */
export async function availableModes(): Promise<string[]> {
  const registry = (await import(new URL("../dist/backends/index.js", import.meta.url).href)) as {
    availableModes: () => string[];
  };
  return registry.availableModes();
}

/** One GET with a bound: the status code and the body. */
export function httpFetch(url: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = get(url, { timeout: timeoutMs }, (response) => {
      let body = "";
      response.on("data", (d: Buffer) => (body += d.toString()));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
    });
    request.on("timeout", () => request.destroy(new Error("timeout")));
    request.on("error", reject);
  });
}

async function httpGet(url: string, timeoutMs: number): Promise<string> {
  return (await httpFetch(url, timeoutMs)).body;
}

export function metricValue(metrics: string, name: string): number | undefined {
  for (const line of metrics.split("\n")) {
    if (!line.startsWith(`${name}{`) || !line.includes('ip_family="IPv4"')) continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (Number.isFinite(value)) return value;
  }
  return undefined;
}

/** The compiled daemon in the node (the VM's root namespace), fed from a manifests folder. */
export class Daemon {
  readonly dir = mkdtempSync("/tmp/kpt-manifests-");
  private child: ChildProcessWithoutNullStreams | undefined;
  private running = false;
  private logText = "";

  constructor(
    private readonly mode: string,
    private readonly extraArgs: readonly string[] = [],
  ) {}

  static argv(mode: string, extra: readonly string[]): string[] {
    return [
      process.execPath,
      join(PROJECT, "bin/kube-proxy-ts.js"),
      "--proxy-mode",
      mode,
      "--hostname-override",
      NODE_NAME,
      "--cluster-cidr",
      CLUSTER_CIDR,
      "--metrics-bind-address",
      "127.0.0.1:10249",
      "--healthz-bind-address",
      "127.0.0.1:10256",
      ...extra,
    ];
  }

  get log(): string {
    return this.logText;
  }

  logTail(lines = 30): string {
    const tail = this.logText
      .trimEnd()
      .split("\n")
      .slice(-lines)
      .map((l) => (l.length > 800 ? `${l.slice(0, 800)}…` : l));
    return `\n--- kube-proxy-ts log (tail) ---\n${tail.join("\n")}`;
  }

  write(name: string, objects: readonly KubeObject[]): void {
    const temp = join(this.dir, `.${name}.tmp`);
    writeFileSync(temp, objects.map((o) => JSON.stringify(o)).join("\n---\n"));
    renameSync(temp, join(this.dir, name));
  }

  remove(name: string): void {
    rmSync(join(this.dir, name), { force: true });
  }

  metrics(): Promise<string> {
    return httpGet("http://127.0.0.1:10249/metrics", 5000);
  }

  /** Starts the daemon and waits (bounded) for its first full sync. */
  async start(timeoutMs = 240_000): Promise<void> {
    const argv = [...Daemon.argv(this.mode, this.extraArgs), "--manifests", this.dir];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
    this.child = child;
    this.running = true;
    child.stdout.on("data", (d: Buffer) => (this.logText += d.toString()));
    child.stderr.on("data", (d: Buffer) => (this.logText += d.toString()));
    child.on("close", (code, signal) => {
      this.running = false;
      this.logText += `[daemon exited: code ${code}, signal ${signal}]\n`;
    });
    await waitFor(
      "the daemon's first sync",
      async () => {
        if (!this.running) throw new Error("the daemon exited");
        return (metricValue(await this.metrics(), "kubeproxy_sync_proxy_rules_last_timestamp_seconds") ?? 0) >
          0
          ? true
          : undefined;
      },
      timeoutMs,
      () => this.logTail(),
    );
  }

  /** Makes a change to the manifests and waits until the daemon has synced after queueing it. */
  async apply(change: () => void, timeoutMs = 90_000): Promise<void> {
    const before = Date.now() / 1000;
    change();
    await waitFor(
      "the daemon to queue the manifest change and sync",
      async () => {
        if (!this.running) throw new Error("the daemon exited");
        const text = await this.metrics();
        const queued = metricValue(text, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds");
        const synced = metricValue(text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds");
        return queued !== undefined && synced !== undefined && queued >= before && synced >= queued
          ? true
          : undefined;
      },
      timeoutMs,
      () => this.logTail(),
    );
  }

  /** SIGTERM (upstream leaves the kernel state in place), bounded; SIGKILL after 20 s. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child === undefined || !this.running) return;
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    await waitFor("the daemon to exit", async () => (this.running ? undefined : true), 30_000);
    clearTimeout(killer);
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The seed's manifests (examples/seed-nginx: node-1, the nginx Service and its two endpoints) into `dir`. */
export function copySeed(dir: string): void {
  const seed = join(PROJECT, "examples/seed-nginx");
  for (const f of readdirSync(seed)) copyFileSync(join(seed, f), join(dir, f));
}

/**
 * The lines of `tool` (iptables-save or ip6tables-save) that name a KUBE- chain, except
 * KUBE-FIREWALL, which kubelet creates too and upstream's clean-up therefore leaves.
 */
export async function kubeLeftovers(tool: string): Promise<string[]> {
  const save = (await exec([tool])).stdout;
  return save.split("\n").filter((l) => l.includes("KUBE-") && !/KUBE-FIREWALL\b/.test(l));
}

/** `kube-proxy-ts --cleanup` in the node, as upstream's `kube-proxy --cleanup`. */
export function cleanup(mode: string): Promise<ExecResult> {
  return exec([...Daemon.argv(mode, []), "--cleanup"], { timeoutMs: 240_000, allowFail: true });
}

export interface RealServer {
  readonly address: string;
  readonly forward: string;
  readonly weight: number;
  readonly activeConn: number;
  readonly inactiveConn: number;
}

export interface VirtualServer {
  readonly protocol: string;
  readonly address: string;
  readonly scheduler: string;
  readonly persistent?: number;
  readonly realServers: readonly RealServer[];
}

/** `ipvsadm -Ln` as a list of virtual servers (`ADDRESS:PORT` keys) and their real servers. */
export function parseIpvsadm(text: string): VirtualServer[] {
  const out: {
    protocol: string;
    address: string;
    scheduler: string;
    persistent?: number;
    realServers: RealServer[];
  }[] = [];
  for (const line of text.split("\n")) {
    const vs = /^(TCP|UDP|SCTP)\s+(\S+)\s+(\S+)(?:.*persistent (\d+))?/.exec(line);
    if (vs !== null) {
      out.push({
        protocol: vs[1]!,
        address: vs[2]!,
        scheduler: vs[3]!,
        ...(vs[4] === undefined ? {} : { persistent: Number(vs[4]) }),
        realServers: [],
      });
      continue;
    }
    const rs = /^\s+->\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)/.exec(line);
    if (rs !== null && rs[1] !== "RemoteAddress:Port" && out.length > 0) {
      out.at(-1)!.realServers.push({
        address: rs[1]!,
        forward: rs[2]!,
        weight: Number(rs[3]),
        activeConn: Number(rs[4]),
        inactiveConn: Number(rs[5]),
      });
    }
  }
  return out;
}

export async function ipvsTable(): Promise<VirtualServer[]> {
  return parseIpvsadm((await exec(["ipvsadm", "-Ln"])).stdout);
}

export function virtualServer(
  table: readonly VirtualServer[],
  protocol: string,
  address: string,
): VirtualServer | undefined {
  return table.find((v) => v.protocol === protocol && v.address === address);
}

/** The answering pod of each reply (`POD PEER`), counted. */
export function tally(replies: readonly AgentReply[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of replies) {
    const key = r.ok ? (r.reply ?? "").split(" ")[0]! : `error:${r.error}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

export async function repeat(n: number, probe: () => Promise<AgentReply>): Promise<AgentReply[]> {
  const replies: AgentReply[] = [];
  for (let i = 0; i < n; i++) replies.push(await probe());
  return replies;
}
