/**
 * Synthetic clusters for the benchmarks: S ClusterIP Services with E ready endpoints each, built
 * as the JSON an API server returns and decoded by the daemon's own decoders, so the benchmark
 * measures the same objects the watch would deliver.
 */
import { JUMP_CHAINS } from "../src/backends/iptables/chains.ts";
import { jumpRuleArgs, quoteRuleArg } from "../src/kernel/iptables.ts";
import { decodeEndpointSlice, decodeService, LABEL_SERVICE_NAME } from "../src/k8s/objects.ts";
import type { EndpointSlice, Service } from "../src/k8s/objects.ts";
import type { IptablesSettings } from "../src/backends/iptables/types.ts";

export interface SyntheticCluster {
  readonly services: Service[];
  readonly endpointSlices: EndpointSlice[];
}

const NAMESPACES = 50;
const NODES = 100;

/** `base` + n as a dotted quad; n stays below 2^22, so a /10 holds every address. */
function ipv4(base: readonly [number, number], n: number): string {
  return `${base[0]}.${base[1] + (n >>> 16)}.${(n >>> 8) & 255}.${n & 255}`;
}

/** ClusterIPs in 10.96.0.0/12, pod IPs in 10.128.0.0/10 (the cluster CIDR of `benchSettings`). */
const clusterIP = (i: number) => ipv4([10, 96], i + 1);
const podIP = (n: number) => ipv4([10, 128], n + 1);

export function names(i: number): { namespace: string; name: string } {
  return { namespace: `bench-${i % NAMESPACES}`, name: `svc-${i}` };
}

function rawService(i: number): unknown {
  const { namespace, name } = names(i);
  const ip = clusterIP(i);
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      name,
      namespace,
      uid: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
      resourceVersion: "1",
    },
    spec: {
      type: "ClusterIP",
      clusterIP: ip,
      clusterIPs: [ip],
      ipFamilies: ["IPv4"],
      ipFamilyPolicy: "SingleStack",
      internalTrafficPolicy: "Cluster",
      sessionAffinity: "None",
      selector: { app: name },
      ports: [{ name: "http", protocol: "TCP", port: 80, targetPort: 8080 }],
    },
    status: { loadBalancer: {} },
  };
}

function rawSlice(i: number, endpointsPerService: number, endpointIPs: readonly string[]): unknown {
  const { namespace, name } = names(i);
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: `${name}-abcde`,
      namespace,
      uid: `00000000-0000-4000-9000-${String(i).padStart(12, "0")}`,
      resourceVersion: "1",
      labels: {
        [LABEL_SERVICE_NAME]: name,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
      },
    },
    addressType: "IPv4",
    endpoints: endpointIPs.slice(0, endpointsPerService).map((ip, k) => ({
      addresses: [ip],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: `node-${(i + k) % NODES}`,
      zone: `zone-${(i + k) % 3}`,
    })),
    ports: [{ name: "http", protocol: "TCP", port: 8080 }],
  };
}

function endpointIPsOf(i: number, endpointsPerService: number): string[] {
  return Array.from({ length: endpointsPerService }, (_, k) => podIP(i * endpointsPerService + k));
}

function checkPlan(serviceCount: number, endpointsPerService: number): void {
  if (serviceCount * endpointsPerService >= 1 << 22 || serviceCount >= 1 << 20) {
    throw new RangeError(`${serviceCount} x ${endpointsPerService} does not fit the synthetic address plan`);
  }
}

export function syntheticCluster(serviceCount: number, endpointsPerService: number): SyntheticCluster {
  checkPlan(serviceCount, endpointsPerService);
  const services: Service[] = [];
  const endpointSlices: EndpointSlice[] = [];
  for (let i = 0; i < serviceCount; i++) {
    const one = syntheticService(i, endpointsPerService);
    services.push(one.service);
    endpointSlices.push(one.endpointSlice);
  }
  return { services, endpointSlices };
}

/** Service i of the plan and its slice: a cluster of i Services plus this one is a Service added. */
export function syntheticService(
  i: number,
  endpointsPerService: number,
): { service: Service; endpointSlice: EndpointSlice } {
  checkPlan(i + 1, endpointsPerService);
  const ips = endpointIPsOf(i, endpointsPerService);
  return {
    service: decodeService(rawService(i), "bench"),
    endpointSlice: decodeEndpointSlice(rawSlice(i, endpointsPerService, ips), "bench"),
  };
}

/**
 * The same cluster as the raw objects a manifests folder holds, one list per namespace (Services,
 * then their EndpointSlices), plus the Node the proxy runs on.
 */
export function syntheticManifests(
  serviceCount: number,
  endpointsPerService: number,
): { node: unknown; byNamespace: Map<string, unknown[]> } {
  checkPlan(serviceCount, endpointsPerService);
  const byNamespace = new Map<string, unknown[]>();
  for (let i = 0; i < serviceCount; i++) {
    const { namespace } = names(i);
    const objects = byNamespace.get(namespace) ?? [];
    objects.push(rawService(i), rawSlice(i, endpointsPerService, endpointIPsOf(i, endpointsPerService)));
    byNamespace.set(namespace, objects);
  }
  const node = {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: BENCH_NODE, labels: { "kubernetes.io/hostname": BENCH_NODE } },
    spec: { podCIDR: "10.128.0.0/24", podCIDRs: ["10.128.0.0/24"] },
    status: { addresses: [{ type: "InternalIP", address: BENCH_NODE_IP }] },
  };
  return { node, byNamespace };
}

/** The same objects as one list, namespace by namespace (bench/yaml-parse.ts). */
export function syntheticManifestObjects(serviceCount: number, endpointsPerService: number): unknown[] {
  return [...syntheticManifests(serviceCount, endpointsPerService).byNamespace.values()].flat();
}

/**
 * Service i's slice after one endpoint was replaced by a new pod (a rollout step): the update a
 * partial sync must handle. The new IP lies outside every synthetic pod IP.
 */
export function sliceWithOneEndpointReplaced(i: number, endpointsPerService: number): EndpointSlice {
  const ips = endpointIPsOf(i, endpointsPerService);
  ips[0] = ipv4([10, 190], i + 1);
  return decodeEndpointSlice(rawSlice(i, endpointsPerService, ips), "bench");
}

export const BENCH_NODE = "node-0";
export const BENCH_NODE_IP = "192.168.0.2";

/**
 * The rules a default kube-proxy writes on a node with ClusterCIDR local detection, and no
 * nfacct counters (a fresh namespace has none, and a missing counter only drops that match).
 */
export function benchSettings(): IptablesSettings {
  return {
    family: "IPv4",
    nodeName: BENCH_NODE,
    nodeIP: BENCH_NODE_IP,
    masqueradeMark: "0x00004000",
    masqueradeAll: false,
    localDetector: { mode: "ClusterCIDR", cidr: "10.128.0.0/10" },
    localhostNodePorts: true,
    nodePortAddresses: [],
    localAddresses: ["127.0.0.1/8", "192.168.0.2/24"],
    conntrackTCPLiberal: false,
    nfacct: { ctStateInvalidDroppedPkts: false, localhostNodePortsAcceptedPkts: false },
    hasRandomFully: true,
    largeClusterEndpointsThreshold: 1000,
  };
}

const BUILT_IN: Readonly<Record<string, readonly string[]>> = {
  filter: ["INPUT", "FORWARD", "OUTPUT"],
  nat: ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
};

/**
 * What iptables-save shows on a node: the restore payload's chains plus the jumps from the
 * built-in chains, which the proxy adds with `iptables -I` (each prepended, so last row first).
 */
export function nodeDump(payload: string): string {
  const sections = Object.entries(BUILT_IN).map(([table, chains]) => {
    const jumps = JUMP_CHAINS.filter((j) => j.table === table)
      .reverse()
      .map((j) => `-A ${j.srcChain} ${jumpRuleArgs(j).map(quoteRuleArg).join(" ")}`);
    return [`*${table}`, ...chains.map((c) => `:${c} ACCEPT [0:0]`), ...jumps, "COMMIT"].join("\n");
  });
  return `${payload}${sections.join("\n")}\n`;
}
