import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { KubeProxyError } from "../../src/errors.ts";
import { BackgroundProcess } from "../../src/kernel/spawn.ts";
import { startPodServer } from "../../src/sandbox/servers.ts";
import type { PodServerOptions } from "../../src/sandbox/servers.ts";
import { Sandbox } from "../../src/sandbox/topology.ts";
import type { ExternalSpec, NodeSpec, PodSpec } from "../../src/sandbox/topology.ts";

/*
 * The real daemon (the compiled `dist/cli/main.js --manifests DIR`) as a background process inside a sandbox
 * node's network namespace, fed from a temporary manifests folder that tests rewrite. Every wait
 * is bounded; a failed wait carries the daemon's log so the test output says what the proxy did.
 */

/** The daemon as shipped: the compiled build (scripts/test.sh builds it first). */
const MAIN = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));
const POLL_MS = 100;

export type Family = "IPv4" | "IPv6";
export type KubeObject = Record<string, unknown>;

export interface DaemonOptions {
  /** Sandbox role of the node the proxy runs on; also its --hostname-override. */
  readonly node: string;
  /** Files written before the daemon starts: name → YAML text or objects (one document each). */
  readonly manifests?: Readonly<Record<string, string | KubeObject | readonly KubeObject[]>>;
  /** Extra upstream flags, e.g. ["--cluster-cidr", "10.244.0.0/16"]. */
  readonly args?: readonly string[];
  readonly metricsPort?: number;
  readonly healthzPort?: number;
  /** Families whose first sync `start` waits for (default IPv4 only). */
  readonly families?: readonly Family[];
  /**
   * Bound on process start-up plus the first full sync (default 60 s): the full sync runs ~30
   * iptables commands per family, which take seconds each when many runs share two cores.
   */
  readonly startTimeoutMs?: number;
  /** Variables added to the daemon's environment (e.g. a PATH of shadowed tools). */
  readonly env?: Readonly<Record<string, string>>;
  /** A command the daemon's argv is appended to (e.g. a mount-fault wrapper). */
  readonly wrap?: readonly string[];
  /**
   * A command `ip netns exec NODE …` itself is appended to, run outside the node namespace (e.g.
   * joining a cgroup, whose file system `ip netns exec` does not show). Stopped by `stop`.
   */
  readonly outside?: readonly string[];
}

/** A bounded wait ran out; the message carries what was awaited and the daemon's state. */
export class WaitTimeoutError extends KubeProxyError {
  readonly code = "KPT_TEST_WAIT_TIMEOUT";
}

/** Thrown by a wait's check when waiting longer cannot help (the daemon exited). */
export class WaitAbortedError extends KubeProxyError {
  readonly code = "KPT_TEST_WAIT_ABORTED";
}

/** Polls `check` every 100 ms until it returns a value other than undefined, at most `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs: number,
  context: () => string = () => "",
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      if (error instanceof WaitAbortedError) throw new WaitAbortedError(`${error.message}${context()}`);
      lastError = error;
    }
    if (Date.now() >= deadline) break;
    await sleep(POLL_MS);
  }
  const cause = lastError instanceof Error ? `\nlast error: ${lastError.message}` : "";
  throw new WaitTimeoutError(`timed out after ${timeoutMs} ms waiting for ${what}${cause}${context()}`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class ProxyDaemon {
  readonly dir: string;
  private child: BackgroundProcess | null = null;
  /** Logs of earlier runs (restarts), so failure messages show the whole story. */
  private previousLogs = "";

  private constructor(
    private readonly sandbox: Sandbox,
    private readonly options: DaemonOptions,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), "kpt-manifests-"));
  }

  /** Writes the initial manifests, starts the daemon and waits for its first sync. */
  static async start(sandbox: Sandbox, options: DaemonOptions): Promise<ProxyDaemon> {
    const daemon = new ProxyDaemon(sandbox, options);
    try {
      for (const [name, content] of Object.entries(options.manifests ?? {})) daemon.write(name, content);
      await daemon.launch();
      return daemon;
    } catch (error) {
      await daemon.dispose();
      throw error;
    }
  }

  /**
   * Writes the manifests and starts the daemon without waiting for its first sync (for tests
   * that interrupt that sync); `relaunch` starts it again and does wait.
   */
  static async spawnOnly(sandbox: Sandbox, options: DaemonOptions): Promise<ProxyDaemon> {
    const daemon = new ProxyDaemon(sandbox, options);
    for (const [name, content] of Object.entries(options.manifests ?? {})) daemon.write(name, content);
    daemon.child = daemon.spawnChild();
    return daemon;
  }

  /** SIGKILL: no clean-up, no last sync, whatever transaction is under way is cut short. */
  async kill(timeoutMs = 10_000): Promise<void> {
    const child = this.child;
    if (child === null) return;
    if (child.running && child.pid !== undefined) process.kill(child.pid, "SIGKILL");
    await waitFor("the killed daemon to exit", async () => (child.running ? undefined : true), timeoutMs);
    this.previousLogs += child.stderr + child.stdout;
    this.child = null;
  }

  /** Starts the daemon (after `kill` or `stop`) and waits for its first sync. */
  async relaunch(): Promise<void> {
    await this.launch();
  }

  get metricsAddress(): string {
    return `127.0.0.1:${this.options.metricsPort ?? 10249}`;
  }

  get healthzAddress(): string {
    return `127.0.0.1:${this.options.healthzPort ?? 10256}`;
  }

  /** The running daemon's process id (`ip netns exec` execs it: the same process). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child?.running ?? false;
  }

  /** Everything the daemon logged (stderr, JSON lines) over all its runs, most recent last. */
  get log(): string {
    return this.previousLogs + (this.child === null ? "" : this.child.stderr + this.child.stdout);
  }

  /** The last `lines` log lines, for assertion messages. */
  logTail(lines = 40): string {
    return `\n--- kube-proxy-ts log (tail) ---\n${this.log.trimEnd().split("\n").slice(-lines).join("\n")}`;
  }

  /** Writes (atomically: temp file + rename) one manifest file; objects become YAML documents. */
  write(name: string, content: string | KubeObject | readonly KubeObject[]): void {
    const text =
      typeof content === "string"
        ? content
        : (Array.isArray(content) ? content : [content]).map((doc) => stringify(doc)).join("---\n");
    const temp = join(this.dir, `.${name}.tmp`);
    writeFileSync(temp, text);
    renameSync(temp, join(this.dir, name));
  }

  remove(name: string): void {
    rmSync(join(this.dir, name), { force: true });
  }

  /**
   * Applies a change to the manifests and waits until the daemon has queued it and finished a
   * sync afterwards, i.e. the kernel reflects it. The change must be a real one (same content
   * queues nothing and times out).
   */
  async apply(change: () => void, timeoutMs = 15_000, family: Family = "IPv4"): Promise<void> {
    const before = Date.now() / 1000;
    change();
    await waitFor(
      "the daemon to queue the manifest change and sync",
      async () => {
        const metrics = await this.metrics();
        const queued = metricValue(
          metrics,
          "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
          family,
        );
        const synced = metricValue(metrics, "kubeproxy_sync_proxy_rules_last_timestamp_seconds", family);
        if (queued === undefined || synced === undefined) return undefined;
        return queued >= before && synced >= queued ? true : undefined;
      },
      timeoutMs,
      () => this.logTail(),
    );
  }

  /** The daemon's /metrics text, fetched from inside the node namespace. */
  async metrics(): Promise<string> {
    const { stdout } = await this.sandbox.exec(
      this.options.node,
      ["curl", "-sS", "--max-time", "5", `http://${this.metricsAddress}/metrics`],
      { timeoutMs: 8_000 },
    );
    return stdout;
  }

  /** `iptables-save` (or ip6tables-save) of the node namespace; `table` limits it to one table. */
  async save(family: Family = "IPv4", table?: string): Promise<string> {
    const tool = family === "IPv4" ? "iptables-save" : "ip6tables-save";
    const argv = table === undefined ? [tool] : [tool, "-t", table];
    return (await this.sandbox.exec(this.options.node, argv)).stdout;
  }

  /** Waits until the node namespace's ruleset satisfies `predicate`. */
  async waitForRules(
    what: string,
    predicate: (save: string) => boolean,
    options: { family?: Family; timeoutMs?: number } = {},
  ): Promise<string> {
    let last = "";
    return waitFor(
      what,
      async () => {
        last = await this.save(options.family);
        return predicate(last) ? last : undefined;
      },
      options.timeoutMs ?? 15_000,
      () => `\n--- iptables-save ---\n${last}${this.logTail()}`,
    );
  }

  /** Stops the daemon (SIGTERM: upstream leaves the rules in place) and starts it again. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  async stop(): Promise<void> {
    if (this.child === null) return;
    await this.child.stop(5_000);
    this.previousLogs += this.child.stderr + this.child.stdout;
    this.child = null;
  }

  /** Stops the daemon and removes the manifests folder; safe to call more than once. */
  async dispose(): Promise<void> {
    try {
      await this.stop();
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  private async launch(): Promise<void> {
    this.child = this.spawnChild();
    await waitForFirstSync(
      this.child,
      () => this.metrics(),
      this.options.families ?? ["IPv4"],
      this.options.startTimeoutMs ?? 60_000,
      () => this.logTail(),
    );
  }

  private spawnChild(): BackgroundProcess {
    const { node, env, outside } = this.options;
    if (outside !== undefined) {
      const argv = [...outside, "ip", "netns", "exec", this.sandbox.netnsOf(node), ...this.daemonArgs()];
      return new BackgroundProcess(argv, env === undefined ? {} : { env });
    }
    return this.sandbox.spawn(node, this.daemonArgs(), env === undefined ? {} : { env });
  }

  private daemonArgs(): string[] {
    const { node } = this.options;
    return [
      ...(this.options.wrap ?? []),
      ...daemonArgv(),
      "--manifests",
      this.dir,
      "--hostname-override",
      node,
      "--iptables-min-sync-period",
      "0s",
      "--healthz-bind-address",
      this.healthzAddress,
      "--metrics-bind-address",
      this.metricsAddress,
      ...(this.options.args ?? []),
    ];
  }
}

/** Waits until `child` has finished a first sync of every family; gives up at once if it exits. */
export async function waitForFirstSync(
  child: BackgroundProcess,
  metrics: () => Promise<string>,
  families: readonly Family[],
  timeoutMs: number,
  context: () => string,
): Promise<void> {
  await waitFor(
    `the daemon's first sync (${families.join(", ")})`,
    async () => {
      if (!child.running) throw new WaitAbortedError("the daemon exited before its first sync");
      const text = await metrics();
      return families.every(
        (f) => (metricValue(text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds", f) ?? 0) > 0,
      )
        ? true
        : undefined;
    },
    timeoutMs,
    context,
  );
}

/** argv that runs the CLI with this Node binary and tsx (append subcommand flags). */
export function daemonArgv(): string[] {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build (scripts/setup.sh does)`);
  return [process.execPath, MAIN];
}

export interface ApiServerDaemonOptions {
  /** Sandbox role of the node the proxy runs on; also its --hostname-override. */
  readonly node: string;
  /** A kubeconfig that reaches the API server from inside the node (NetnsApiBridge's). */
  readonly kubeconfig: string;
  readonly minSyncPeriod: string;
  readonly metricsAddress: string;
  /** "" turns the health server off. */
  readonly healthzAddress: string;
  /** Extra upstream flags, e.g. ["--cluster-cidr", "10.244.0.0/16"]. */
  readonly args?: readonly string[];
  /** Bound on process start-up plus the first full sync. */
  readonly startTimeoutMs: number;
}

/**
 * The daemon in API-server mode (`--kubeconfig`) inside the node's namespace, returned once its
 * first IPv4 sync is done. If that sync does not come, the daemon is stopped again.
 */
export async function startApiServerDaemon(
  sandbox: Sandbox,
  options: ApiServerDaemonOptions,
): Promise<BackgroundProcess> {
  const { node } = options;
  const child = sandbox.spawn(node, [
    ...daemonArgv(),
    "--kubeconfig",
    options.kubeconfig,
    "--hostname-override",
    node,
    "--iptables-min-sync-period",
    options.minSyncPeriod,
    "--healthz-bind-address",
    options.healthzAddress,
    "--metrics-bind-address",
    options.metricsAddress,
    ...(options.args ?? []),
  ]);
  try {
    await waitForFirstSync(
      child,
      () => nodeMetrics(sandbox, node, options.metricsAddress),
      ["IPv4"],
      options.startTimeoutMs,
      () => `\n--- daemon log (tail) ---\n${child.stderr.trimEnd().split("\n").slice(-30).join("\n")}`,
    );
    return child;
  } catch (error) {
    await child.stop();
    throw error;
  }
}

/** The /metrics text served at `address` inside `node`'s namespace. */
export async function nodeMetrics(sandbox: Sandbox, node: string, address: string): Promise<string> {
  return (await sandbox.exec(node, ["curl", "-sS", "--max-time", "2", `http://${address}/metrics`])).stdout;
}

/** A sample's value from Prometheus text for a metric with an `ip_family` label. */
export function metricValue(metrics: string, name: string, family: Family): number | undefined {
  for (const line of metrics.split("\n")) {
    if (!line.startsWith(`${name}{`) || !line.includes(`ip_family="${family}"`)) continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (Number.isFinite(value)) return value;
  }
  return undefined;
}

/*
 * Kubernetes objects, spelled as the API server returns them (defaults filled in), so the
 * manifests folder holds what `kubectl get -o yaml` would print.
 */

export interface ServicePortSpec {
  readonly name?: string;
  readonly port: number;
  readonly targetPort?: number;
  readonly protocol?: "TCP" | "UDP" | "SCTP";
  readonly nodePort?: number;
}

export interface ServiceSpec {
  readonly name: string;
  readonly namespace?: string;
  readonly type?: "ClusterIP" | "NodePort" | "LoadBalancer";
  readonly clusterIP: string;
  readonly ipFamily?: Family;
  readonly ports: readonly ServicePortSpec[];
  readonly externalIPs?: readonly string[];
  readonly loadBalancerIP?: string;
  readonly loadBalancerSourceRanges?: readonly string[];
  readonly externalTrafficPolicy?: "Cluster" | "Local";
  readonly internalTrafficPolicy?: "Cluster" | "Local";
  readonly sessionAffinity?: "None" | "ClientIP";
  readonly healthCheckNodePort?: number;
}

export function service(spec: ServiceSpec): KubeObject {
  const type = spec.type ?? "ClusterIP";
  const external = type !== "ClusterIP";
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: spec.name, namespace: spec.namespace ?? "default", labels: { app: spec.name } },
    spec: {
      type,
      selector: { app: spec.name },
      clusterIP: spec.clusterIP,
      clusterIPs: [spec.clusterIP],
      ipFamilies: [spec.ipFamily ?? "IPv4"],
      ipFamilyPolicy: "SingleStack",
      ...(external ? { externalTrafficPolicy: spec.externalTrafficPolicy ?? "Cluster" } : {}),
      internalTrafficPolicy: spec.internalTrafficPolicy ?? "Cluster",
      sessionAffinity: spec.sessionAffinity ?? "None",
      ...(spec.sessionAffinity === "ClientIP"
        ? { sessionAffinityConfig: { clientIP: { timeoutSeconds: 10800 } } }
        : {}),
      ...(spec.externalIPs === undefined ? {} : { externalIPs: [...spec.externalIPs] }),
      ...(spec.loadBalancerSourceRanges === undefined
        ? {}
        : { loadBalancerSourceRanges: [...spec.loadBalancerSourceRanges] }),
      ...(spec.healthCheckNodePort === undefined ? {} : { healthCheckNodePort: spec.healthCheckNodePort }),
      ports: spec.ports.map((p) => ({
        ...(p.name === undefined ? {} : { name: p.name }),
        port: p.port,
        targetPort: p.targetPort ?? p.port,
        protocol: p.protocol ?? "TCP",
        ...(p.nodePort === undefined ? {} : { nodePort: p.nodePort }),
      })),
    },
    status:
      spec.loadBalancerIP === undefined
        ? { loadBalancer: {} }
        : { loadBalancer: { ingress: [{ ip: spec.loadBalancerIP, ipMode: "VIP" }] } },
  };
}

export interface EndpointSpec {
  readonly ip: string;
  /** The node the endpoint runs on (as the slice claims; decides local vs remote). */
  readonly node: string;
  readonly pod?: string;
  readonly ready?: boolean;
  readonly serving?: boolean;
  readonly terminating?: boolean;
}

export interface EndpointSliceSpec {
  readonly service: string;
  readonly namespace?: string;
  /** Slice name (default `<service>-abcde`). */
  readonly name?: string;
  readonly addressType?: Family;
  readonly endpoints: readonly EndpointSpec[];
  readonly ports: readonly { readonly name?: string; readonly port: number; readonly protocol?: string }[];
}

export function endpointSlice(spec: EndpointSliceSpec): KubeObject {
  const namespace = spec.namespace ?? "default";
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: spec.name ?? `${spec.service}-abcde`,
      namespace,
      labels: {
        "kubernetes.io/service-name": spec.service,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
      },
    },
    addressType: spec.addressType ?? "IPv4",
    endpoints: spec.endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: {
        ready: e.ready ?? true,
        serving: e.serving ?? e.ready ?? true,
        terminating: e.terminating ?? false,
      },
      nodeName: e.node,
      ...(e.pod === undefined ? {} : { targetRef: { kind: "Pod", namespace, name: e.pod } }),
    })),
    ports: spec.ports.map((p) => ({ name: p.name ?? "", port: p.port, protocol: p.protocol ?? "TCP" })),
  };
}

export interface NodeObjectSpec {
  readonly name: string;
  readonly ips: readonly string[];
  readonly podCIDRs: readonly string[];
}

export function nodeObject(spec: NodeObjectSpec): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: spec.name, labels: { "kubernetes.io/hostname": spec.name } },
    spec: { podCIDR: spec.podCIDRs[0], podCIDRs: [...spec.podCIDRs] },
    status: {
      addresses: [
        ...spec.ips.map((address) => ({ type: "InternalIP", address })),
        { type: "Hostname", address: spec.name },
      ],
    },
  };
}

/**
 * A real node has a default route; the sandbox's node has only its LAN and pod routes. Without
 * one, the routing decision fails before kube-proxy's rules matter: the node's own connections
 * to a ClusterIP fail with ENETUNREACH before nat OUTPUT can DNAT them, and forwarded packets
 * that are not DNATed (no endpoints, a firewalled load-balancer IP) get "net unreachable"
 * instead of meeting the filter rules. The gateway is an unused LAN address: nothing is meant
 * to leave that way.
 */
export async function addNodeDefaultRoute(sandbox: Sandbox, node: string, gateway: string): Promise<void> {
  const family = gateway.includes(":") ? "-6" : "-4";
  await sandbox.exec(node, ["ip", family, "route", "add", "default", "via", gateway]);
}

export interface ProxyNodeSpec {
  readonly node: NodeSpec & {
    readonly name: string;
    /** Unused LAN addresses for the node's default routes, one a family (see addNodeDefaultRoute). */
    readonly defaultGateways: readonly string[];
  };
  /** An external client on the LAN; its `routes` go through the node. */
  readonly client: { readonly name: string } & Omit<ExternalSpec, "gateway">;
  /** Pods on the node: name → addresses (a string: the IPv4 address alone). */
  readonly pods: Readonly<Record<string, string | PodSpec>>;
  readonly podServer?: PodServerOptions;
  /** Runs once a pod's server listens, e.g. to start another server in the pod. */
  readonly onPod?: (sandbox: Sandbox, pod: string) => Promise<unknown>;
}

/**
 * A sandbox with one node, an external client routed through it and pods running the pod
 * server, ready for the daemon. Pods start one at a time: several Node start-ups at once can
 * take longer than their readiness bound on a busy box. On failure nothing is left behind.
 */
export async function startProxyNode(prefix: string, spec: ProxyNodeSpec): Promise<Sandbox> {
  const sandbox = await Sandbox.create({ prefix });
  try {
    const { name: node, defaultGateways, ...nodeSpec } = spec.node;
    const { name: client, ...clientSpec } = spec.client;
    await sandbox.addNode(node, nodeSpec);
    await sandbox.addExternal(client, { ...clientSpec, gateway: node });
    for (const gateway of defaultGateways) await addNodeDefaultRoute(sandbox, node, gateway);
    for (const [pod, addresses] of Object.entries(spec.pods)) {
      await sandbox.addPod(node, pod, typeof addresses === "string" ? { ipv4: addresses } : addresses);
      await startPodServer(sandbox, pod, spec.podServer);
      await spec.onPod?.(sandbox, pod);
    }
    return sandbox;
  } catch (error) {
    await sandbox.dispose();
    throw error;
  }
}

/** Stops the daemon, then removes the sandbox even if stopping failed (either may be unset). */
export async function disposeProxyNode(
  daemon: ProxyDaemon | undefined,
  sandbox: Sandbox | undefined,
): Promise<void> {
  try {
    await daemon?.dispose();
  } finally {
    await sandbox?.dispose();
  }
}
