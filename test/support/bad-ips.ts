/*
 * Upstream's TestBadIPs Service (ns1/svc1): a LoadBalancer whose every address is spelled with
 * leading zeros, as legacy objects may carry them. Raw API fields, for the model tests'
 * builders; each test spells out the canonical addresses it expects.
 */

export const BAD_IPS_SERVICE_SPEC: Record<string, unknown> = {
  type: "LoadBalancer",
  clusterIP: "172.30.0.041",
  ports: [{ name: "p80", port: 80, protocol: "TCP", nodePort: 3001 }],
  externalIPs: ["192.168.099.022"],
  loadBalancerSourceRanges: ["203.0.113.000/025"],
};

export const BAD_IPS_SERVICE_STATUS: Record<string, unknown> = {
  loadBalancer: { ingress: [{ ip: "1.2.3.004" }] },
};
