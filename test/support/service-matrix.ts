import type { ProbeStep } from "../../src/sandbox/client.ts";
import { buildSeedTopology, SEED, seedManifests, seedPod } from "../../src/sandbox/seed.ts";
import type { SeedPod, SeedTopology } from "../../src/sandbox/seed.ts";
import { Sandbox } from "../../src/sandbox/topology.ts";
import { addNodeDefaultRoute, endpointSlice, ProxyDaemon, service } from "./daemon.ts";
import type { EndpointSpec, KubeObject, ServiceSpec } from "./daemon.ts";

/*
 * The "service matrix" that the proxy e2e tests and the tracer's prediction tests share: one
 * node running the real daemon, the seed's two nginx pods, two external clients on the LAN
 * (different source IPs), and Services of every kind. One definition, so that what the proxy
 * tests show real clients experience is the same ruleset the tracer is checked against.
 */

export const NODE = SEED.node.name;
export const CLIENT = SEED.external.name;
export const CLIENT2 = "client-2";
export const CLIENT2_IP = "192.168.50.3";
/** Routed to the node from the LAN: where externalIPs and load-balancer IPs live. */
const VIP_CIDR = "192.168.60.0/24";
export const EXTERNAL_IP = "192.168.60.10";
export const LB_IP = "192.168.60.20";
export const OK_MS = 3_000;
export const DROP_MS = 1_500;

export const podA = seedPod(0);
export const podB = seedPod(1);

export type Manifests = Record<string, string | KubeObject[]>;

export const port80 = [{ port: 80 }];

export function onNode(pod: SeedPod, node: string = NODE): EndpointSpec {
  return { ip: pod.ipv4, node, pod: pod.name };
}

/** `<file>.yaml` holding a Service and its one EndpointSlice (port 80). */
export function servicePair(file: string, svc: ServiceSpec, endpoints: EndpointSpec[]): Manifests {
  return {
    [`${file}.yaml`]: [service(svc), endpointSlice({ service: svc.name, endpoints, ports: port80 })],
  };
}

export interface ServiceMatrixOptions {
  /**
   * Type of the two externalTrafficPolicy Local Services (web-local, web-remote). As a
   * LoadBalancer they stand for one whose cloud has not assigned an IP yet: their NodePort and
   * health check port work all the same.
   */
  readonly localType: "NodePort" | "LoadBalancer";
  /** Further manifest files a suite needs for itself. */
  readonly extra: Manifests;
}

export function serviceMatrixManifests(options: ServiceMatrixOptions): Manifests {
  const both = [onNode(podA), onNode(podB)];
  return {
    ...seedManifests([podA, podB]),
    ...servicePair(
      "ext",
      {
        name: "web-ext",
        clusterIP: "10.1.0.20",
        ports: [{ port: 8080, targetPort: 80 }],
        externalIPs: [EXTERNAL_IP],
      },
      both,
    ),
    ...servicePair(
      "lb",
      {
        name: "web-lb",
        type: "LoadBalancer",
        clusterIP: "10.1.0.21",
        ports: [{ port: 80, nodePort: 31001 }],
        loadBalancerIP: LB_IP,
        loadBalancerSourceRanges: [`${SEED.external.ipv4}/32`],
      },
      both,
    ),
    ...servicePair(
      "affinity",
      { name: "web-affinity", clusterIP: "10.1.0.22", ports: port80, sessionAffinity: "ClientIP" },
      both,
    ),
    ...servicePair(
      "local",
      {
        name: "web-local",
        type: options.localType,
        clusterIP: "10.1.0.23",
        ports: [{ port: 80, nodePort: 31002 }],
        externalTrafficPolicy: "Local",
        healthCheckNodePort: 32002,
      },
      [onNode(podA)],
    ),
    ...servicePair(
      "remote",
      {
        name: "web-remote",
        type: options.localType,
        clusterIP: "10.1.0.24",
        ports: [{ port: 80, nodePort: 31003 }],
        externalTrafficPolicy: "Local",
        healthCheckNodePort: 32003,
      },
      // The pod lives on this node, but the slice says node-2: for the proxy it is remote.
      [onNode(podB, "node-2")],
    ),
    ...servicePair("hairpin", { name: "web-hairpin", clusterIP: "10.1.0.26", ports: port80 }, [onNode(podA)]),
    "empty.yaml": [
      service({
        name: "web-empty",
        type: "NodePort",
        clusterIP: "10.1.0.27",
        ports: [{ port: 80, nodePort: 31004 }],
      }),
    ],
    ...options.extra,
  };
}

export interface ServiceMatrix {
  readonly sandbox: Sandbox;
  readonly seed: SeedTopology;
  readonly daemon: ProxyDaemon;
}

/**
 * Builds the topology (both clients route the VIP range via the node) and starts the daemon on
 * `manifests`, waiting for its first sync. On failure nothing is left behind.
 */
/** The proxy modes the traffic suites run in, each case once per mode. */
export const TRAFFIC_MODES = ["iptables", "nftables"] as const;
export type TrafficMode = (typeof TRAFFIC_MODES)[number];

export async function startServiceMatrix(
  prefix: string,
  manifests: Manifests,
  mode: TrafficMode = "iptables",
  /** Further daemon flags, e.g. `--web-bind-address`. */
  args: readonly string[] = [],
): Promise<ServiceMatrix> {
  const sandbox = await Sandbox.create({ prefix });
  try {
    const seed = await buildSeedTopology(sandbox);
    await sandbox.addExternal(CLIENT2, {
      ipv4: CLIENT2_IP,
      gateway: NODE,
      routes: [SEED.serviceCIDR, VIP_CIDR],
    });
    await sandbox.exec(CLIENT, ["ip", "route", "add", VIP_CIDR, "via", SEED.node.ipv4]);
    await addNodeDefaultRoute(sandbox, NODE, "192.168.50.254");
    const daemon = await ProxyDaemon.start(sandbox, {
      node: NODE,
      manifests,
      args: ["--proxy-mode", mode, "--cluster-cidr", "10.244.0.0/16", ...args],
    });
    return { sandbox, seed, daemon };
  } catch (error) {
    await sandbox.dispose();
    throw error;
  }
}

/** Stops the daemon, then removes the sandbox even if stopping failed; undefined: start failed. */
export async function stopServiceMatrix(matrix: ServiceMatrix | undefined): Promise<void> {
  if (matrix === undefined) return;
  try {
    await matrix.daemon.dispose();
  } finally {
    await matrix.sandbox.dispose();
  }
}

export function tcp(host: string, port: number, count: number, timeoutMs = OK_MS): ProbeStep {
  return { protocol: "tcp", host, port, count, timeoutMs };
}
