import { after, afterEach, before } from "node:test";
import { probe } from "../../src/sandbox/client.ts";
import type { ProbeReport } from "../../src/sandbox/client.ts";
import type { PodServerOptions } from "../../src/sandbox/servers.ts";
import { Sandbox } from "../../src/sandbox/topology.ts";
import type { ExternalSpec, NodeSpec, PodSpec } from "../../src/sandbox/topology.ts";
import { daemonArgv, endpointSlice, nodeObject, ProxyDaemon, service, startProxyNode } from "./daemon.ts";
import type { DaemonOptions, KubeObject } from "./daemon.ts";

/*
 * The sandbox most daemon e2e suites share, and its hooks: one node (node-1, 192.168.50.1), an
 * external client on its LAN routed through it, the pods web-a and web-b serving HTTP, a Service
 * `web` at 10.1.0.80 over both, and the real daemon on the node. `withDaemonSandbox` registers
 * the `before`/`after` hooks of the describe it is called in: the sandbox (and the daemon, when
 * the suite gives its options) exists for the suite's cases, and the daemon, the sandbox and
 * whatever the suite set up go away afterwards, even when something failed.
 */

/** The node, the client, the Service and its pods of the shared sandbox. */
export const WEB = {
  node: "node-1",
  nodeIP: "192.168.50.1",
  client: "client",
  clientIP: "192.168.50.2",
  vip: "10.1.0.80",
  pods: { "web-a": "10.244.0.30", "web-b": "10.244.0.31" },
  podCIDR: "10.244.0.0/24",
  clusterCIDR: "10.244.0.0/16",
  serviceCIDR: "10.1.0.0/16",
} as const;

export type WebPod = keyof typeof WEB.pods;

/** `node.yaml`: the Node object of node-1 with its IPv4 address and pod CIDR. */
export function nodeManifest(): { "node.yaml": KubeObject } {
  return { "node.yaml": nodeObject({ name: WEB.node, ips: [WEB.nodeIP], podCIDRs: [WEB.podCIDR] }) };
}

export interface WebPortSpec {
  readonly name: string;
  readonly port: number;
  /** Given on any port: the Service is a NodePort Service. */
  readonly nodePort?: number;
}

/** A Service over both pods (port `http` 80 unless given) and its EndpointSlice. */
export function webObjects(
  name = "web",
  clusterIP: string = WEB.vip,
  ports: readonly WebPortSpec[] = [{ name: "http", port: 80 }],
): KubeObject[] {
  return [
    service({
      name,
      clusterIP,
      ports,
      type: ports.some((p) => p.nodePort !== undefined) ? "NodePort" : "ClusterIP",
    }),
    endpointSlice({
      service: name,
      endpoints: Object.entries(WEB.pods).map(([pod, ip]) => ({ ip, node: WEB.node, pod })),
      ports,
    }),
  ];
}

/** `node.yaml` and `web.yaml` (the Service `web` over both pods). */
export function webManifests(): Record<string, KubeObject | KubeObject[]> {
  return { ...nodeManifest(), "web.yaml": webObjects() };
}

/** Daemon options without the node (always the shared node) and with the mode's flags added. */
export type SandboxDaemonOptions = Omit<DaemonOptions, "node">;

export interface DaemonSandboxOptions {
  /** Sandbox prefix; in nftables mode an `n` is appended, so both modes' runs are told apart. */
  readonly prefix: string;
  /** `--proxy-mode` of every daemon started (left out: the daemon's default, iptables). */
  readonly mode?: "iptables" | "nftables";
  /** `--cluster-cidr` of every daemon started (default 10.244.0.0/16; "" for none). */
  readonly clusterCIDR?: string;
  /** `bare`: the node alone (no client, no pods, no default route). Default: the full topology. */
  readonly topology?: "full" | "bare";
  /** Pods on the node (default web-a and web-b); a string is the IPv4 address alone. */
  readonly pods?: Readonly<Record<string, string | PodSpec>>;
  readonly podServer?: PodServerOptions;
  /** Runs once a pod's server listens, e.g. to start another server in the pod. */
  readonly onPod?: (sandbox: Sandbox, pod: string) => Promise<unknown>;
  /** Overrides of the node's spec (an IPv6 address, its default gateways). */
  readonly node?: Partial<NodeSpec> & { readonly defaultGateways?: readonly string[] };
  /** Overrides of the client's spec (an IPv6 address, its routes). */
  readonly client?: Partial<Omit<ExternalSpec, "gateway">>;
  /** Runs once the sandbox is up, before the daemon starts (foreign rules, a lock file). */
  readonly prepare?: (sandbox: Sandbox) => Promise<void>;
  /** The daemon `before` starts; left out, the cases start theirs with `start`/`spawnOnly`. */
  readonly daemon?: SandboxDaemonOptions | (() => SandboxDaemonOptions);
  /** After each case: the daemon stopped and `--cleanup` run, so each case starts from a bare node. */
  readonly cleanEachCase?: boolean;
  /** Runs in `after`, once the daemon is stopped and before the sandbox goes. */
  readonly teardown?: () => unknown;
}

export interface DaemonSandbox {
  readonly sandbox: Sandbox;
  /** The running (or last started) daemon; throws when there is none. */
  readonly daemon: ProxyDaemon;
  readonly hasDaemon: boolean;
  /** Starts the daemon on the node with the suite's mode and cluster CIDR and waits for its first sync. */
  start(options?: SandboxDaemonOptions): Promise<ProxyDaemon>;
  /** Starts the daemon without waiting for its first sync (`relaunch` waits). */
  spawnOnly(options?: SandboxDaemonOptions): Promise<ProxyDaemon>;
  /** Stops the daemon and removes its manifests folder (a later `start` begins anew). */
  stop(): Promise<void>;
  /** `count` HTTP requests from the client to `host:port` (each bounded by `timeoutMs`). */
  served(count: number, host?: string, options?: { port?: number; timeoutMs?: number }): Promise<ProbeReport>;
  /** `kube-proxy-ts --cleanup` on the node (the node's own tools). */
  cleanup(args?: readonly string[]): Promise<void>;
}

async function buildSandbox(prefix: string, options: DaemonSandboxOptions): Promise<Sandbox> {
  const { defaultGateways, ...node } = options.node ?? {};
  const nodeSpec = { ipv4: WEB.nodeIP, podCIDR: WEB.podCIDR, ...node };
  if (options.topology === "bare") {
    const sandbox = await Sandbox.create({ prefix });
    try {
      await sandbox.addNode(WEB.node, nodeSpec);
      return sandbox;
    } catch (error) {
      await sandbox.dispose();
      throw error;
    }
  }
  return startProxyNode(prefix, {
    node: { name: WEB.node, ...nodeSpec, defaultGateways: defaultGateways ?? ["192.168.50.254"] },
    client: { name: WEB.client, ipv4: WEB.clientIP, routes: [WEB.serviceCIDR], ...options.client },
    pods: options.pods ?? WEB.pods,
    podServer: options.podServer ?? { udpPort: null, readyTimeoutMs: 30_000 },
    ...(options.onPod === undefined ? {} : { onPod: options.onPod }),
  });
}

/** Registers the suite's hooks (call it inside `describe`) and returns the handle its cases use. */
export function withDaemonSandbox(options: DaemonSandboxOptions): DaemonSandbox {
  const prefix = options.mode === "nftables" ? `${options.prefix}n` : options.prefix;
  const clusterCIDR = options.clusterCIDR ?? WEB.clusterCIDR;
  const modeArgs = [
    ...(options.mode === undefined ? [] : ["--proxy-mode", options.mode]),
    ...(clusterCIDR === "" ? [] : ["--cluster-cidr", clusterCIDR]),
  ];
  let sandbox: Sandbox | undefined;
  let daemon: ProxyDaemon | undefined;

  const box = (): Sandbox => {
    if (sandbox === undefined) throw new Error("the sandbox is not up (its before hook failed)");
    return sandbox;
  };
  const withMode = (daemonOptions: SandboxDaemonOptions = {}): DaemonOptions => ({
    ...daemonOptions,
    node: WEB.node,
    args: [...modeArgs, ...(daemonOptions.args ?? [])],
  });
  const stop = async (): Promise<void> => {
    const running = daemon;
    daemon = undefined;
    await running?.dispose();
  };
  const cleanup = async (args: readonly string[] = []): Promise<void> => {
    await box().exec(WEB.node, [...daemonArgv(), "--cleanup", "--hostname-override", WEB.node, ...args], {
      timeoutMs: 60_000,
    });
  };

  const handle: DaemonSandbox = {
    get sandbox() {
      return box();
    },
    get daemon() {
      if (daemon === undefined) throw new Error("no daemon was started");
      return daemon;
    },
    get hasDaemon() {
      return daemon !== undefined;
    },
    async start(daemonOptions) {
      await stop();
      daemon = await ProxyDaemon.start(box(), withMode(daemonOptions));
      return daemon;
    },
    async spawnOnly(daemonOptions) {
      await stop();
      daemon = await ProxyDaemon.spawnOnly(box(), withMode(daemonOptions));
      return daemon;
    },
    stop,
    async served(count, host = WEB.vip, probeOptions = {}) {
      const [report] = await probe(box(), WEB.client, [
        {
          protocol: "tcp",
          host,
          port: probeOptions.port ?? 80,
          count,
          timeoutMs: probeOptions.timeoutMs ?? 2_000,
        },
      ]);
      if (report === undefined) throw new Error("the probe returned no report");
      return report;
    },
    cleanup,
  };

  before(async () => {
    sandbox = await buildSandbox(prefix, options);
    await options.prepare?.(sandbox);
    if (options.daemon !== undefined)
      await handle.start(typeof options.daemon === "function" ? options.daemon() : options.daemon);
  });

  if (options.cleanEachCase === true)
    afterEach(async () => {
      await stop();
      await cleanup(options.mode === undefined ? [] : ["--proxy-mode", options.mode]);
    });

  after(async () => {
    try {
      await stop();
    } finally {
      try {
        await options.teardown?.();
      } finally {
        await sandbox?.dispose();
        sandbox = undefined;
      }
    }
  });

  return handle;
}
