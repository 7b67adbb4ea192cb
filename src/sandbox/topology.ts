import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ProcessRunner } from "../kernel/exec.ts";
import type { ExecOptions, ExecResult, Runner } from "../kernel/exec.ts";
import { runSync, spawnBackground } from "../kernel/spawn.ts";
import type { BackgroundOptions, BackgroundProcess } from "../kernel/spawn.ts";
import { cidrContains, formatAddress, formatCIDR, nthAddress, parseIP, parseNetwork } from "../ip.ts";
import type { Address, Cidr, IPFamily } from "../ip.ts";
import { SandboxCleanupError, SandboxError } from "./errors.ts";

/*
 * Layout. Every node, pod and external client is its own network namespace, named
 * `<prefix>-<id>-<role>`. Nodes and external clients hang off one bridge that lives in a
 * dedicated "lan" namespace, so the LAN is a plain wire and no namespace of interest bridges.
 * Each pod gets its own veth pair to its node, a /32 (/128) address and a default route via the
 * node's pod gateway address, which every pod-facing veth of the node carries. Pod traffic, even
 * pod to pod on the same node, is therefore routed through the node namespace, where kube-proxy's
 * iptables rules see it without br_netfilter; a pod reaching itself through a ClusterIP comes
 * back out of its own veth after DNAT, which is the hairpin case kube-proxy masquerades.
 */

export interface SandboxOptions {
  /** First part of every namespace name (default "kpt"). */
  readonly prefix?: string;
  readonly runner?: Runner;
  /** Prefix length of the LAN that nodes and external clients share (default 24 / 64). */
  readonly lanPrefixLength?: number;
  readonly lanPrefixLengthV6?: number;
  /** Where each run records its owner pid so `sweep` can tell crashed runs from live ones. */
  readonly stateDir?: string;
}

export interface NodeSpec {
  /** The node's InternalIP on the LAN, e.g. 192.168.50.1. */
  readonly ipv4: string;
  readonly ipv6?: string;
  /** Pod CIDR (default 10.244.<n>.0/24 for the n-th node); its first address is the pod gateway. */
  readonly podCIDR?: string;
  /** IPv6 pod CIDR, only with `ipv6` (default fd00:10:244:<n>::/64). */
  readonly podCIDRv6?: string;
}

export interface PodSpec {
  readonly ipv4: string;
  readonly ipv6?: string;
}

export interface ExternalSpec {
  readonly ipv4: string;
  readonly ipv6?: string;
  /** Node that `routes` go through (e.g. to reach ClusterIPs or pod IPs from outside). */
  readonly gateway?: string;
  readonly routes?: readonly string[];
}

export interface SandboxNode {
  readonly name: string;
  readonly netns: string;
  readonly ipv4: string;
  readonly ipv6: string | undefined;
  readonly podCIDR: string;
  readonly podGatewayIPv4: string;
  readonly podCIDRv6: string | undefined;
  readonly podGatewayIPv6: string | undefined;
  /** The node's LAN interface inside its namespace. */
  readonly lanInterface: string;
}

export interface SandboxPod {
  readonly name: string;
  readonly node: string;
  readonly netns: string;
  readonly ipv4: string;
  readonly ipv6: string | undefined;
  /** The node-side end of the pod's veth pair (in the node namespace). */
  readonly hostInterface: string;
}

export interface SandboxExternal {
  readonly name: string;
  readonly netns: string;
  readonly ipv4: string;
  readonly ipv6: string | undefined;
}

export type SandboxMember =
  | { readonly kind: "lan"; readonly netns: string }
  | { readonly kind: "node"; readonly netns: string; readonly node: SandboxNode }
  | { readonly kind: "pod"; readonly netns: string; readonly pod: SandboxPod }
  | { readonly kind: "external"; readonly netns: string; readonly external: SandboxExternal };

const LAN_ROLE = "lan";
const LAN_BRIDGE = "br0";
const ROLE_PATTERN = /^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/;
const PREFIX_PATTERN = /^[a-z][a-z0-9]{0,15}$/;
const DEFAULT_STATE_DIR = "/run/kpt-sandbox";
const COMMAND_TIMEOUT_MS = 15_000;

const liveSandboxes = new Set<Sandbox>();
let signalHandlersInstalled = false;

/** A set of network namespaces wired as a small cluster; removes everything it made on dispose. */
export class Sandbox implements AsyncDisposable {
  readonly id: string;
  readonly prefix: string;
  readonly runner: Runner;
  private readonly lanPrefixLength: number;
  private readonly lanPrefixLengthV6: number;
  private readonly registryFile: string;
  private readonly members = new Map<string, SandboxMember>();
  /** Namespaces in creation order, including one whose setup failed half-way. */
  private readonly namespaces: string[] = [];
  /** Background processes with the namespace each runs in. */
  private readonly processes = new Map<BackgroundProcess, string>();
  private disposing: Promise<void> | null = null;

  private constructor(id: string, prefix: string, options: SandboxOptions) {
    this.id = id;
    this.prefix = prefix;
    this.runner = options.runner ?? new ProcessRunner();
    this.lanPrefixLength = options.lanPrefixLength ?? 24;
    this.lanPrefixLengthV6 = options.lanPrefixLengthV6 ?? 64;
    this.registryFile = join(options.stateDir ?? DEFAULT_STATE_DIR, `${prefix}-${id}.json`);
  }

  static async create(options: SandboxOptions = {}): Promise<Sandbox> {
    const prefix = options.prefix ?? "kpt";
    if (!PREFIX_PATTERN.test(prefix)) throw new SandboxError(`bad sandbox prefix ${JSON.stringify(prefix)}`);
    const stateDir = options.stateDir ?? DEFAULT_STATE_DIR;
    mkdirSync(stateDir, { recursive: true });
    const runner = options.runner ?? new ProcessRunner();
    const existing = new Set(await listNamespaces(runner));
    const taken = new Set(readdirSync(stateDir));
    for (let attempt = 0; attempt < 16; attempt++) {
      const id = randomBytes(3).toString("hex");
      const stem = `${prefix}-${id}`;
      if (taken.has(`${stem}.json`) || [...existing].some((name) => name.startsWith(`${stem}-`))) continue;
      const sandbox = new Sandbox(id, prefix, { ...options, runner });
      sandbox.writeRegistry();
      liveSandboxes.add(sandbox);
      installSignalHandlers();
      return sandbox;
    }
    throw new SandboxError("could not find an unused sandbox id");
  }

  /**
   * Removes the namespaces of earlier runs with this prefix whose owning process is gone (a
   * crashed test, a killed demo), and the processes still running in them. Namespaces of live
   * runs, and any namespace this code did not record, are left alone. Returns the names it
   * deleted.
   */
  static async sweep(
    prefix = "kpt",
    options: { runner?: Runner; stateDir?: string } = {},
  ): Promise<string[]> {
    const runner = options.runner ?? new ProcessRunner();
    const stateDir = options.stateDir ?? DEFAULT_STATE_DIR;
    let files: string[];
    try {
      files = readdirSync(stateDir);
    } catch (error) {
      // No state directory: no sandbox ever ran here, so there is nothing to sweep.
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw error;
    }
    const namespaces = await listNamespaces(runner);
    const removed: string[] = [];
    for (const file of files) {
      if (!file.startsWith(`${prefix}-`) || !file.endsWith(".json")) continue;
      const record = readRegistry(join(stateDir, file));
      if (record === null || processAlive(record.pid, record.startTime)) continue;
      const stem = file.slice(0, -".json".length);
      for (const name of namespaces.filter((ns) => ns.startsWith(`${stem}-`)).reverse()) {
        await killNamespacePids(runner, name);
        await deleteNamespace(runner, name);
        removed.push(name);
      }
      rmSync(join(stateDir, file), { force: true });
    }
    return removed;
  }

  /** The namespace name for a role (node, pod or external name, or "lan"). */
  netnsOf(role: string): string {
    return `${this.prefix}-${this.id}-${role}`;
  }

  member(role: string): SandboxMember {
    const member = this.members.get(role);
    if (member === undefined) throw new SandboxError(`sandbox ${this.id} has no namespace "${role}"`);
    return member;
  }

  node(name: string): SandboxNode {
    const member = this.member(name);
    if (member.kind !== "node") throw new SandboxError(`"${name}" is a ${member.kind}, not a node`);
    return member.node;
  }

  pod(name: string): SandboxPod {
    const member = this.member(name);
    if (member.kind !== "pod") throw new SandboxError(`"${name}" is a ${member.kind}, not a pod`);
    return member.pod;
  }

  get nodes(): SandboxNode[] {
    return [...this.members.values()].flatMap((m) => (m.kind === "node" ? [m.node] : []));
  }

  get pods(): SandboxPod[] {
    return [...this.members.values()].flatMap((m) => (m.kind === "pod" ? [m.pod] : []));
  }

  /** Every namespace this sandbox currently owns, in creation order. */
  get netnsNames(): string[] {
    return [...this.namespaces];
  }

  async addNode(name: string, spec: NodeSpec): Promise<SandboxNode> {
    this.checkNewRole(name);
    const index = this.nodes.length;
    const podCIDR = cidrOf(spec.podCIDR ?? `10.244.${index}.0/24`);
    requireFamily(podCIDR.family, "IPv4", "podCIDR");
    requireFamily(addressOf(spec.ipv4).family, "IPv4", "node ipv4");
    let podCIDRv6: Cidr | undefined;
    if (spec.ipv6 !== undefined) {
      requireFamily(addressOf(spec.ipv6).family, "IPv6", "node ipv6");
      podCIDRv6 = cidrOf(spec.podCIDRv6 ?? `fd00:10:244:${index.toString(16)}::/64`);
      requireFamily(podCIDRv6.family, "IPv6", "podCIDRv6");
    } else if (spec.podCIDRv6 !== undefined) {
      throw new SandboxError(`node ${name}: podCIDRv6 needs an ipv6 node address`);
    }
    const lan = await this.ensureLan();
    const netns = this.netnsOf(name);
    await this.createNamespace(netns, { forwarding: true });
    const node: SandboxNode = {
      name,
      netns,
      ipv4: spec.ipv4,
      ipv6: spec.ipv6,
      podCIDR: formatCIDR(podCIDR),
      podGatewayIPv4: formatAddress(nthAddress(podCIDR, 1)),
      podCIDRv6: podCIDRv6 === undefined ? undefined : formatCIDR(podCIDRv6),
      podGatewayIPv6: podCIDRv6 === undefined ? undefined : formatAddress(nthAddress(podCIDRv6, 1)),
      lanInterface: "eth0",
    };
    await this.attachToLan(lan, name, netns, spec.ipv4, spec.ipv6);
    const peers = this.nodes;
    this.members.set(name, { kind: "node", netns, node });
    for (const peer of peers) {
      await this.routePodCIDR(peer, node);
      await this.routePodCIDR(node, peer);
    }
    return node;
  }

  async addPod(nodeName: string, name: string, spec: PodSpec): Promise<SandboxPod> {
    const node = this.node(nodeName);
    this.checkNewRole(name);
    if (!cidrContains(cidrOf(node.podCIDR), addressOf(spec.ipv4))) {
      throw new SandboxError(
        `pod ${name}: ${spec.ipv4} is outside node ${nodeName}'s podCIDR ${node.podCIDR}`,
      );
    }
    if (spec.ipv6 !== undefined) {
      if (node.podCIDRv6 === undefined) throw new SandboxError(`pod ${name}: node ${nodeName} is IPv4-only`);
      if (!cidrContains(cidrOf(node.podCIDRv6), addressOf(spec.ipv6))) {
        throw new SandboxError(`pod ${name}: ${spec.ipv6} is outside ${node.podCIDRv6}`);
      }
    }
    const netns = this.netnsOf(name);
    const hostInterface = `veth${createHash("sha256").update(name).digest("hex").slice(0, 8)}`;
    await this.createNamespace(netns, { forwarding: false });
    const onNode = [
      `link add ${hostInterface} type veth peer name eth0 netns ${netns}`,
      `address add ${node.podGatewayIPv4}/32 dev ${hostInterface}`,
      ...(spec.ipv6 === undefined
        ? []
        : [`address add ${node.podGatewayIPv6}/128 dev ${hostInterface} nodad`]),
      `link set ${hostInterface} up`,
      `route add ${spec.ipv4}/32 dev ${hostInterface} scope link src ${node.podGatewayIPv4}`,
      ...(spec.ipv6 === undefined ? [] : [`route add ${spec.ipv6}/128 dev ${hostInterface}`]),
    ];
    const inPod = [
      `address add ${spec.ipv4}/32 dev eth0`,
      ...(spec.ipv6 === undefined ? [] : [`address add ${spec.ipv6}/128 dev eth0 nodad`]),
      "link set eth0 up",
      `route add ${node.podGatewayIPv4} dev eth0 scope link`,
      `route add default via ${node.podGatewayIPv4} dev eth0`,
      ...(spec.ipv6 === undefined
        ? []
        : [
            `route add ${node.podGatewayIPv6} dev eth0`,
            `route add default via ${node.podGatewayIPv6} dev eth0`,
          ]),
    ];
    await this.ipBatch(node.netns, onNode);
    await this.ipBatch(netns, inPod);
    const pod: SandboxPod = { name, node: nodeName, netns, ipv4: spec.ipv4, ipv6: spec.ipv6, hostInterface };
    this.members.set(name, { kind: "pod", netns, pod });
    return pod;
  }

  /** Deletes a pod's namespace (its veth pair and the node's route to it go with it). */
  async removePod(name: string): Promise<void> {
    const pod = this.pod(name);
    await this.stopProcessesIn(pod.netns);
    await deleteNamespace(this.runner, pod.netns);
    this.forgetNamespace(pod.netns);
    this.members.delete(name);
  }

  async addExternal(name: string, spec: ExternalSpec): Promise<SandboxExternal> {
    this.checkNewRole(name);
    requireFamily(addressOf(spec.ipv4).family, "IPv4", "external ipv4");
    if (spec.ipv6 !== undefined) requireFamily(addressOf(spec.ipv6).family, "IPv6", "external ipv6");
    const routeCommands = this.externalRoutes(name, spec);
    const lan = await this.ensureLan();
    const netns = this.netnsOf(name);
    await this.createNamespace(netns, { forwarding: false });
    await this.attachToLan(lan, name, netns, spec.ipv4, spec.ipv6);
    if (routeCommands.length > 0) await this.ipBatch(netns, routeCommands);
    const external: SandboxExternal = { name, netns, ipv4: spec.ipv4, ipv6: spec.ipv6 };
    this.members.set(name, { kind: "external", netns, external });
    return external;
  }

  /** `ip route` commands sending an external client's `routes` via its gateway node's LAN address. */
  private externalRoutes(name: string, spec: ExternalSpec): string[] {
    const routes = (spec.routes ?? []).map(cidrOf);
    if (routes.length === 0) return [];
    if (spec.gateway === undefined) throw new SandboxError(`external ${name}: routes need a gateway node`);
    const gateway = this.node(spec.gateway);
    return routes.map((route) => {
      const via = route.family === "IPv4" ? gateway.ipv4 : gateway.ipv6;
      if (via === undefined)
        throw new SandboxError(`external ${name}: IPv6 routes need an IPv6 gateway node`);
      return `route add ${formatCIDR(route)} via ${via}`;
    });
  }

  /** Runs a command inside a member's namespace. */
  exec(role: string, argv: readonly string[], options: Omit<ExecOptions, "netns"> = {}): Promise<ExecResult> {
    return this.runner.run(argv, {
      timeoutMs: COMMAND_TIMEOUT_MS,
      ...options,
      netns: this.member(role).netns,
    });
  }

  /** Starts a long-running process inside a member's namespace; it is stopped on dispose. */
  spawn(
    role: string,
    argv: readonly string[],
    options: Omit<BackgroundOptions, "netns"> = {},
  ): BackgroundProcess {
    if (this.disposing !== null) throw new SandboxError(`sandbox ${this.id} is disposed`);
    const netns = this.member(role).netns;
    const child = spawnBackground(argv, { ...options, netns });
    this.processes.set(child, netns);
    return child;
  }

  /** Stops every process and deletes every namespace; safe to call more than once. */
  dispose(): Promise<void> {
    this.disposing ??= this.teardown();
    return this.disposing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  /**
   * Gives up ownership: nothing is removed on dispose, signal or exit, so the namespaces and
   * the processes in them outlive this process (`demo --keep`). Once this process is gone,
   * `Sandbox.sweep(prefix)` removes them.
   */
  release(): void {
    this.disposing ??= Promise.resolve();
    for (const child of this.processes.keys()) child.unref();
    this.processes.clear();
    liveSandboxes.delete(this);
  }

  private async teardown(): Promise<void> {
    const failures: unknown[] = [];
    await Promise.all([...this.processes.keys()].map((child) => child.stop()));
    this.processes.clear();
    for (const netns of [...this.namespaces].reverse()) {
      try {
        await killNamespacePids(this.runner, netns);
        await deleteNamespace(this.runner, netns);
      } catch (error) {
        failures.push(error);
      }
    }
    this.namespaces.length = 0;
    this.members.clear();
    liveSandboxes.delete(this);
    if (failures.length > 0) throw new SandboxCleanupError(failures);
    rmSync(this.registryFile, { force: true });
  }

  /** Synchronous last resort for the process `exit` event: nothing asynchronous runs there. */
  disposeSync(): void {
    for (const child of this.processes.keys()) {
      if (child.pid !== undefined && child.running) killQuietly(child.pid);
    }
    for (const netns of [...this.namespaces].reverse()) runSync(["ip", "netns", "delete", netns]);
    this.namespaces.length = 0;
    liveSandboxes.delete(this);
    rmSync(this.registryFile, { force: true });
  }

  private checkNewRole(role: string): void {
    if (this.disposing !== null) throw new SandboxError(`sandbox ${this.id} is disposed`);
    if (!ROLE_PATTERN.test(role) || role === LAN_ROLE) {
      throw new SandboxError(
        `bad sandbox name ${JSON.stringify(role)}: use lowercase letters, digits and "-"`,
      );
    }
    if (this.members.has(role)) throw new SandboxError(`sandbox ${this.id} already has "${role}"`);
  }

  private async createNamespace(netns: string, options: { forwarding: boolean }): Promise<void> {
    this.namespaces.push(netns);
    this.writeRegistry();
    await this.runner.run(["ip", "netns", "add", netns], { timeoutMs: COMMAND_TIMEOUT_MS });
    // DAD would hold IPv6 addresses (link-local ones too) tentative for about a second.
    const sysctls = ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"];
    if (options.forwarding) sysctls.push("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1");
    await this.runner.run(["sysctl", "-q", "-w", ...sysctls], { netns, timeoutMs: COMMAND_TIMEOUT_MS });
    await this.ipBatch(netns, ["link set lo up"]);
  }

  private async ensureLan(): Promise<string> {
    const existing = this.members.get(LAN_ROLE);
    if (existing !== undefined) return existing.netns;
    const netns = this.netnsOf(LAN_ROLE);
    await this.createNamespace(netns, { forwarding: false });
    await this.ipBatch(netns, [
      `link add ${LAN_BRIDGE} type bridge forward_delay 0`,
      `link set ${LAN_BRIDGE} up`,
    ]);
    this.members.set(LAN_ROLE, { kind: "lan", netns });
    return netns;
  }

  private async attachToLan(
    lan: string,
    role: string,
    netns: string,
    ipv4: string,
    ipv6?: string,
  ): Promise<void> {
    const port = `ln${createHash("sha256").update(role).digest("hex").slice(0, 8)}`;
    await this.ipBatch(lan, [
      `link add ${port} type veth peer name eth0 netns ${netns}`,
      `link set ${port} master ${LAN_BRIDGE}`,
      `link set ${port} up`,
    ]);
    await this.ipBatch(netns, [
      `address add ${ipv4}/${this.lanPrefixLength} dev eth0`,
      ...(ipv6 === undefined ? [] : [`address add ${ipv6}/${this.lanPrefixLengthV6} dev eth0 nodad`]),
      "link set eth0 up",
    ]);
  }

  private async routePodCIDR(from: SandboxNode, to: SandboxNode): Promise<void> {
    const commands = [`route add ${to.podCIDR} via ${to.ipv4}`];
    if (from.ipv6 !== undefined && to.ipv6 !== undefined && to.podCIDRv6 !== undefined) {
      commands.push(`route add ${to.podCIDRv6} via ${to.ipv6}`);
    }
    await this.ipBatch(from.netns, commands);
  }

  private ipBatch(netns: string, commands: readonly string[]): Promise<ExecResult> {
    return this.runner.run(["ip", "-n", netns, "-batch", "-"], {
      stdin: `${commands.join("\n")}\n`,
      timeoutMs: COMMAND_TIMEOUT_MS,
    });
  }

  private async stopProcessesIn(netns: string): Promise<void> {
    const inside = [...this.processes].flatMap(([child, where]) => (where === netns ? [child] : []));
    await Promise.all(inside.map((child) => child.stop()));
    for (const child of inside) this.processes.delete(child);
    await killNamespacePids(this.runner, netns);
  }

  private forgetNamespace(netns: string): void {
    const index = this.namespaces.indexOf(netns);
    if (index >= 0) this.namespaces.splice(index, 1);
    this.writeRegistry();
  }

  private writeRegistry(): void {
    const record: RegistryRecord = { pid: process.pid, startTime: processStartTime(process.pid) };
    writeFileSync(this.registryFile, `${JSON.stringify({ ...record, namespaces: this.namespaces })}\n`);
  }
}

interface RegistryRecord {
  readonly pid: number;
  readonly startTime: string | null;
}

function readRegistry(file: string): RegistryRecord | null {
  try {
    const parsed: unknown = JSON.parse(readFileSync(file, "utf8"));
    if (typeof parsed !== "object" || parsed === null) return null;
    const { pid, startTime } = parsed as Record<string, unknown>;
    if (typeof pid !== "number") return null;
    return { pid, startTime: typeof startTime === "string" ? startTime : null };
  } catch {
    return null;
  }
}

/** Field 22 of /proc/PID/stat: tells a live owner from a recycled pid. */
function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces; fields after it are space separated.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

function processAlive(pid: number, startTime: string | null): boolean {
  const current = processStartTime(pid);
  return current !== null && (startTime === null || current === startTime);
}

function requireFamily(actual: IPFamily, expected: IPFamily, what: string): void {
  if (actual !== expected) throw new SandboxError(`${what} must be an ${expected} address or CIDR`);
}

function addressOf(ip: string): Address {
  const address = parseIP(ip);
  if (address === undefined) throw new SandboxError(`not an IP address: ${JSON.stringify(ip)}`);
  return address;
}

/** A CIDR with its prefix length, normalised to its network address (10.244.0.77/24 → 10.244.0.0/24). */
function cidrOf(text: string): Cidr {
  addressOf(text.split("/")[0] ?? "");
  const network = parseNetwork(text);
  if (network === undefined) throw new SandboxError(`not a CIDR: ${JSON.stringify(text)}`);
  return network;
}

async function listNamespaces(runner: Runner): Promise<string[]> {
  const { stdout } = await runner.run(["ip", "netns", "list"], { timeoutMs: COMMAND_TIMEOUT_MS });
  return stdout
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => name !== "");
}

async function killNamespacePids(runner: Runner, netns: string): Promise<void> {
  const { stdout } = await runner.run(["ip", "netns", "pids", netns], {
    timeoutMs: COMMAND_TIMEOUT_MS,
    okExitCodes: [0, 1],
  });
  for (const pid of stdout.split("\n").filter((line) => /^\d+$/.test(line))) killQuietly(Number(pid));
}

async function deleteNamespace(runner: Runner, netns: string): Promise<void> {
  // Exit status 1 with "No such file" means someone (a retried dispose, a sweep) already removed it.
  const result = await runner.run(["ip", "netns", "delete", netns], {
    timeoutMs: COMMAND_TIMEOUT_MS,
    okExitCodes: [0, 1],
  });
  if (result.exitCode !== 0 && !/No such file/i.test(result.stderr)) {
    throw new SandboxError(`ip netns delete ${netns} failed: ${result.stderr.trim()}`);
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch (error) {
    // ESRCH: the process ended between listing and killing, which is what we wanted.
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
}

function installSignalHandlers(): void {
  if (signalHandlersInstalled) return;
  signalHandlersInstalled = true;
  const onSignal = (signal: NodeJS.Signals): void => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    void Promise.allSettled([...liveSandboxes].map((sandbox) => sandbox.dispose())).then(() => {
      // Handlers are gone, so re-raising gives the default behaviour (exit by that signal).
      process.kill(process.pid, signal);
    });
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("exit", () => {
    for (const sandbox of [...liveSandboxes]) sandbox.disposeSync();
  });
}
