import { createHash } from "node:crypto";
import { stringify } from "yaml";
import { SandboxError } from "./errors.ts";
import { startPodServer } from "./servers.ts";
import type { PodServer } from "./servers.ts";
import type { Sandbox, SandboxExternal, SandboxNode, SandboxPod } from "./topology.ts";

/*
 * The seed document's cluster: Service default/nginx, ClusterIP 10.1.125.152:80, NodePort
 * 30978, two nginx pods at 10.244.0.9 and 10.244.0.10 on one node; plus an external client on
 * the node's LAN. Pods beyond the first two get the following addresses (10.244.0.11, …).
 */
export const SEED = {
  namespace: "default",
  service: "nginx",
  clusterIP: "10.1.125.152",
  serviceCIDR: "10.1.0.0/16",
  port: 80,
  targetPort: 80,
  nodePort: 30978,
  node: { name: "node-1", ipv4: "192.168.50.1", podCIDR: "10.244.0.0/24" },
  external: { name: "client", ipv4: "192.168.50.2" },
  /** Not in the seed (which is IPv4-only): the addresses `dualStack` adds. */
  ipv6: {
    serviceCIDR: "fd00:10:96::/112",
    node: { ipv6: "fd00:50::1", podCIDRv6: "fd00:10:244::/64" },
    external: { ipv6: "fd00:50::2" },
  },
  podTemplateHash: "6799fc88d8",
  firstPodHost: 9,
  maxPods: 100,
} as const;

export interface SeedPod {
  readonly name: string;
  readonly ipv4: string;
  /** The pod's address in the IPv6 pod CIDR, used when the topology is dual-stack. */
  readonly ipv6: string;
}

export interface SeedTopology {
  readonly node: SandboxNode;
  readonly external: SandboxExternal;
  readonly pods: readonly SandboxPod[];
  readonly servers: readonly PodServer[];
}

export interface SeedOptions {
  /** Number of nginx pods (default 2, as in the seed). */
  readonly pods?: number;
  /** Start the HTTP/UDP pod servers (default true). */
  readonly servers?: boolean;
  /** Also give node, pods and client IPv6 addresses (SEED.ipv6), for ip6tables tests. */
  readonly dualStack?: boolean;
}

/** The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes). */
const SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789";

/** The i-th nginx pod (0-based): a Deployment-style name and the next address in the pod CIDR. */
export function seedPod(index: number): SeedPod {
  if (!Number.isInteger(index) || index < 0 || index >= SEED.maxPods) {
    throw new SandboxError(`seed pod index must be 0..${SEED.maxPods - 1}, got ${index}`);
  }
  const digest = createHash("sha256").update(`nginx-${index}`).digest();
  const suffix = [...digest.subarray(0, 5)]
    .map((byte) => SUFFIX_ALPHABET[byte % SUFFIX_ALPHABET.length])
    .join("");
  return {
    name: `${SEED.service}-${SEED.podTemplateHash}-${suffix}`,
    ipv4: `10.244.0.${SEED.firstPodHost + index}`,
    ipv6: `fd00:10:244::${(SEED.firstPodHost + index).toString(16)}`,
  };
}

/** Builds the seed's node, its nginx pods (servers listening on port 80) and the external client. */
export async function buildSeedTopology(sandbox: Sandbox, options: SeedOptions = {}): Promise<SeedTopology> {
  const count = options.pods ?? 2;
  if (!Number.isInteger(count) || count < 0 || count > SEED.maxPods) {
    throw new SandboxError(`seed pods must be 0..${SEED.maxPods}, got ${count}`);
  }
  const dualStack = options.dualStack === true;
  const node = await sandbox.addNode(SEED.node.name, {
    ipv4: SEED.node.ipv4,
    podCIDR: SEED.node.podCIDR,
    ...(dualStack ? SEED.ipv6.node : {}),
  });
  const external = await sandbox.addExternal(SEED.external.name, {
    ipv4: SEED.external.ipv4,
    gateway: SEED.node.name,
    routes: dualStack ? [SEED.serviceCIDR, SEED.ipv6.serviceCIDR] : [SEED.serviceCIDR],
    ...(dualStack ? SEED.ipv6.external : {}),
  });
  const pods: SandboxPod[] = [];
  for (let index = 0; index < count; index++) {
    const { name, ipv4, ipv6 } = seedPod(index);
    pods.push(await sandbox.addPod(SEED.node.name, name, dualStack ? { ipv4, ipv6 } : { ipv4 }));
  }
  const servers =
    options.servers === false ? [] : await Promise.all(pods.map((pod) => startPodServer(sandbox, pod.name)));
  return { node, external, pods, servers };
}

/** Adds the next nginx pod live (the demo's "scale to three"), with its server unless told not to. */
export async function addSeedPod(
  sandbox: Sandbox,
  options: { servers?: boolean } = {},
): Promise<{ pod: SandboxPod; server: PodServer | null }> {
  const present = new Set(sandbox.pods.map((pod) => pod.name));
  let index = 0;
  while (index < SEED.maxPods && present.has(seedPod(index).name)) index++;
  const { name, ipv4, ipv6 } = seedPod(index);
  const dualStack = sandbox.node(SEED.node.name).podCIDRv6 !== undefined;
  const pod = await sandbox.addPod(SEED.node.name, name, dualStack ? { ipv4, ipv6 } : { ipv4 });
  const server = options.servers === false ? null : await startPodServer(sandbox, name);
  return { pod, server };
}

/** Removes a pod live: its server stops and its namespace, veth and node route disappear. */
export function removeSeedPod(sandbox: Sandbox, name: string): Promise<void> {
  return sandbox.removePod(name);
}

/**
 * The seed cluster as Kubernetes manifests (one YAML document per file name) for the given pods:
 * what `examples/seed-nginx/` holds for the first two, and what the demo writes as pods come and
 * go.
 */
export function seedManifests(pods: readonly Pick<SeedPod, "name" | "ipv4">[]): Record<string, string> {
  const service = {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: SEED.service, namespace: SEED.namespace, labels: { app: SEED.service } },
    spec: {
      type: "NodePort",
      selector: { app: SEED.service },
      clusterIP: SEED.clusterIP,
      clusterIPs: [SEED.clusterIP],
      ipFamilies: ["IPv4"],
      ipFamilyPolicy: "SingleStack",
      externalTrafficPolicy: "Cluster",
      internalTrafficPolicy: "Cluster",
      sessionAffinity: "None",
      ports: [{ port: SEED.port, targetPort: SEED.targetPort, nodePort: SEED.nodePort, protocol: "TCP" }],
    },
  };
  const endpointSlice = {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: `${SEED.service}-x7k2p`,
      namespace: SEED.namespace,
      labels: {
        "kubernetes.io/service-name": SEED.service,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
      },
    },
    addressType: "IPv4",
    endpoints: pods.map((pod) => ({
      addresses: [pod.ipv4],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: SEED.node.name,
      targetRef: { kind: "Pod", namespace: SEED.namespace, name: pod.name },
    })),
    ports: [{ name: "", port: SEED.targetPort, protocol: "TCP" }],
  };
  const node = {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: SEED.node.name, labels: { "kubernetes.io/hostname": SEED.node.name } },
    spec: { podCIDR: SEED.node.podCIDR, podCIDRs: [SEED.node.podCIDR] },
    status: {
      addresses: [
        { type: "InternalIP", address: SEED.node.ipv4 },
        { type: "Hostname", address: SEED.node.name },
      ],
    },
  };
  const header = "# The seed document's cluster; generated by seedManifests() in src/sandbox/seed.ts.\n";
  return {
    "service.yaml": header + stringify(service),
    "endpointslice.yaml": header + stringify(endpointSlice),
    "node.yaml": header + stringify(node),
  };
}
