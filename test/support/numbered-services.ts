/**
 * Decoded objects for tests that need many similar Services: `ns/svc<n>`, a ClusterIP Service
 * with one TCP port `p80` (80 → 8080), and its EndpointSlice `svc<n>-1`.
 */
import { decodeEndpointSlice, decodeService } from "../../src/k8s/objects.ts";

/** `<prefix>.<n / 250>.<n % 250 + 1>`: a distinct address per n for n < 250 × 256. */
export const numberedIP = (prefix: string, n: number): string =>
  `${prefix}.${Math.floor(n / 250)}.${(n % 250) + 1}`;

/** Service `ns/svc<n>` with ClusterIP `numberedIP("172.30", n)`; with a `nodePort`, of type NodePort. */
export function numberedService(n: number, nodePort?: number) {
  return decodeService(
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: `svc${n}`, namespace: "ns" },
      spec: {
        type: nodePort === undefined ? "ClusterIP" : "NodePort",
        clusterIP: numberedIP("172.30", n),
        ports: [{ name: "p80", port: 80, protocol: "TCP", ...(nodePort === undefined ? {} : { nodePort }) }],
      },
    },
    "test",
  );
}

/** EndpointSlice `ns/svc<n>-1` of Service `svc<n>`, one ready endpoint per IP, port 8080. */
export function numberedSlice(n: number, ips: readonly string[]) {
  return decodeEndpointSlice(
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: `svc${n}-1`, namespace: "ns", labels: { "kubernetes.io/service-name": `svc${n}` } },
      addressType: "IPv4",
      endpoints: ips.map((ip) => ({ addresses: [ip] })),
      ports: [{ name: "p80", port: 8080, protocol: "TCP" }],
    },
    "test",
  );
}
