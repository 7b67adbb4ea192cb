/**
 * The scale lab's manifests folder: N synthetic Services (bench/synthetic.ts) plus the target
 * Service whose only endpoint is the server pod, and which sorts after every synthetic one, so
 * that its rules are the last a packet reaches in iptables mode's KUBE-SERVICES list.
 *
 * Also a command, for the ipvs VM, where the lab's measurement runs inside the guest:
 *   node manifests.js [DIR SERVICES ENDPOINTS]   writes the folder if given; prints the addresses as JSON
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BENCH_NODE, syntheticManifests } from "../synthetic.ts";

export const LAB_ADDRESSES = {
  targetIP: "10.111.255.250",
  targetPort: 80,
  serverIP: "10.244.0.20",
  serverPort: 8080,
  clientIP: "10.244.0.10",
} as const;

export function writeLabFolder(dir: string, services: number, endpointsPerService: number): void {
  const { node, byNamespace } = syntheticManifests(services, endpointsPerService);
  const list = (items: unknown[]) => JSON.stringify({ apiVersion: "v1", kind: "List", items });
  writeFileSync(join(dir, "node.json"), list([node]));
  for (const [namespace, objects] of byNamespace)
    writeFileSync(join(dir, `${namespace}.json`), list(objects));
  const { targetIP, targetPort, serverIP, serverPort } = LAB_ADDRESSES;
  // `zz-lab/target` sorts after every `bench-*` Service.
  const target = {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "target", namespace: "zz-lab" },
    spec: {
      type: "ClusterIP",
      clusterIP: targetIP,
      clusterIPs: [targetIP],
      ports: [
        { name: "tcp", protocol: "TCP", port: targetPort },
        { name: "udp", protocol: "UDP", port: targetPort },
      ],
    },
  };
  const slice = {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: "target-lab", namespace: "zz-lab", labels: { "kubernetes.io/service-name": "target" } },
    addressType: "IPv4",
    endpoints: [{ addresses: [serverIP], conditions: { ready: true }, nodeName: BENCH_NODE }],
    ports: [
      { name: "tcp", protocol: "TCP", port: serverPort },
      { name: "udp", protocol: "UDP", port: serverPort },
    ],
  };
  writeFileSync(join(dir, "zz-lab.json"), list([target, slice]));
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [dir, services, endpoints] = process.argv.slice(2);
  if (dir !== undefined) {
    if (!(Number(services) >= 1) || !(Number(endpoints) >= 1))
      throw new Error("usage: manifests.js [DIR SERVICES ENDPOINTS]");
    writeLabFolder(dir, Number(services), Number(endpoints));
  }
  console.log(JSON.stringify(LAB_ADDRESSES));
}
