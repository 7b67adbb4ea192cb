import { test } from "node:test";
import assert from "node:assert/strict";
import {
  clusterIPForFamily,
  externallyAccessible,
  servicePortsForFamily,
  usesClusterEndpoints,
  usesLocalEndpoints,
} from "../../../src/proxy/serviceport.ts";
import { servicePortKey, servicePortNameString } from "../../../src/proxy/types.ts";
import { BAD_IPS_SERVICE_SPEC, BAD_IPS_SERVICE_STATUS } from "../../support/bad-ips.ts";
import { svc } from "./builders.ts";

const p80 = [{ name: "p80", port: 80, protocol: "TCP" }];

test("TestBadIPs: every address of the Service is canonicalised", () => {
  const s = svc("ns1", "svc1", BAD_IPS_SERVICE_SPEC, BAD_IPS_SERVICE_STATUS);
  const { ports, warnings } = servicePortsForFamily(s, "IPv4");
  assert.deepEqual(warnings, []);
  assert.equal(ports.length, 1);
  const sp = ports[0]!;
  assert.equal(servicePortNameString(sp.name), "ns1/svc1:p80");
  assert.equal(servicePortKey(sp.name), "ns1/svc1:p80/TCP");
  assert.equal(sp.clusterIP, "172.30.0.41");
  assert.deepEqual(sp.externalIPs, ["192.168.99.22"]);
  assert.deepEqual(sp.loadBalancerVIPs, ["1.2.3.4"]);
  assert.deepEqual(sp.loadBalancerSourceRanges, ["203.0.113.0/25"]);
  assert.equal(sp.nodePort, 3001);
});

test("headless, ExternalName and other-family Services produce no ports", () => {
  assert.equal(
    servicePortsForFamily(svc("ns", "a", { clusterIP: "None", ports: p80 }), "IPv4").ports.length,
    0,
  );
  assert.equal(servicePortsForFamily(svc("ns", "a", { clusterIP: "", ports: p80 }), "IPv4").ports.length, 0);
  assert.equal(
    servicePortsForFamily(svc("ns", "a", { type: "ExternalName", clusterIP: "10.0.0.1", ports: p80 }), "IPv4")
      .ports.length,
    0,
  );
  assert.equal(
    servicePortsForFamily(svc("ns", "a", { clusterIP: "fd00::1", ports: p80 }), "IPv4").ports.length,
    0,
  );
  assert.equal(
    servicePortsForFamily(svc("ns", "a", { clusterIP: "fd00::1", ports: p80 }), "IPv6").ports.length,
    1,
  );
});

test("dual-stack: clusterIPs selected by ipFamilies; other-family addresses filtered silently", () => {
  const s = svc(
    "ns",
    "ds",
    {
      type: "LoadBalancer",
      clusterIP: "fd00::10",
      clusterIPs: ["fd00::10", "10.0.0.10"],
      ipFamilies: ["IPv6", "IPv4"],
      ports: p80,
      externalIPs: ["1.1.1.1", "2001:db8::1", "junk", ""],
      loadBalancerSourceRanges: [" 1.2.3.4/28", "2001:db8::/32 ", "", "bad/99"],
    },
    { loadBalancer: { ingress: [{ ip: "5.6.7.8" }, { ip: "2001:db8::5" }, { hostname: "lb.example" }] } },
  );
  assert.equal(clusterIPForFamily(s, "IPv4"), "10.0.0.10");
  assert.equal(clusterIPForFamily(s, "IPv6"), "fd00::10");
  const v4 = servicePortsForFamily(s, "IPv4");
  assert.deepEqual(v4.ports[0]!.externalIPs, ["1.1.1.1"]);
  assert.deepEqual(v4.ports[0]!.loadBalancerSourceRanges, ["1.2.3.0/28"]);
  assert.deepEqual(v4.ports[0]!.loadBalancerVIPs, ["5.6.7.8"]);
  assert.deepEqual(
    v4.warnings.map((w) => w.field),
    ["spec.externalIPs[2]", "spec.loadBalancerSourceRanges[3]"],
    "only unparseable values are reported; empty strings are ignored silently",
  );
  const v6 = servicePortsForFamily(s, "IPv6");
  assert.equal(v6.ports[0]!.clusterIP, "fd00::10");
  assert.deepEqual(v6.ports[0]!.externalIPs, ["2001:db8::1"]);
  assert.deepEqual(v6.ports[0]!.loadBalancerSourceRanges, ["2001:db8::/32"]);
  assert.deepEqual(v6.ports[0]!.loadBalancerVIPs, ["2001:db8::5"]);
  const single = svc("ns", "one", {
    clusterIP: "10.0.0.1",
    clusterIPs: ["10.0.0.1"],
    ipFamilies: ["IPv4"],
    ports: p80,
  });
  assert.equal(clusterIPForFamily(single, "IPv6"), "");
});

test("LoadBalancer ipMode Proxy gets no VIP rules unless the gate is off", () => {
  const s = svc(
    "ns",
    "lb",
    { type: "LoadBalancer", clusterIP: "10.0.0.1", ports: p80 },
    {
      loadBalancer: {
        ingress: [{ ip: "1.2.3.4", ipMode: "Proxy" }, { ip: "5.6.7.8", ipMode: "VIP" }, { ip: "9.10.11.12" }],
      },
    },
  );
  assert.deepEqual(servicePortsForFamily(s, "IPv4").ports[0]!.loadBalancerVIPs, ["5.6.7.8", "9.10.11.12"]);
  assert.deepEqual(
    servicePortsForFamily(s, "IPv4", { LoadBalancerIPMode: false, PreferSameTrafficDistribution: true })
      .ports[0]!.loadBalancerVIPs,
    ["1.2.3.4", "5.6.7.8", "9.10.11.12"],
  );
});

test("session affinity: ClientIP with API default timeout 10800, or the configured one", () => {
  const def = svc("ns", "a", { clusterIP: "10.0.0.1", ports: p80, sessionAffinity: "ClientIP" });
  assert.deepEqual(servicePortsForFamily(def, "IPv4").ports[0]!.sessionAffinity, {
    type: "ClientIP",
    maxAgeSeconds: 10800,
  });
  const set = svc("ns", "a", {
    clusterIP: "10.0.0.1",
    ports: p80,
    sessionAffinity: "ClientIP",
    sessionAffinityConfig: { clientIP: { timeoutSeconds: 300 } },
  });
  assert.deepEqual(servicePortsForFamily(set, "IPv4").ports[0]!.sessionAffinity, {
    type: "ClientIP",
    maxAgeSeconds: 300,
  });
  const none = svc("ns", "a", { clusterIP: "10.0.0.1", ports: p80, sessionAffinity: "None" });
  assert.equal(servicePortsForFamily(none, "IPv4").ports[0]!.sessionAffinity, null);
});

test("externalPolicyLocal follows the service-level 'externally accessible' rule (incl. empty type)", () => {
  const mk = (type: string | undefined, externalIPs: string[]) =>
    servicePortsForFamily(
      svc("ns", "a", {
        type,
        clusterIP: "10.0.0.1",
        ports: p80,
        externalIPs,
        externalTrafficPolicy: "Local",
      }),
      "IPv4",
    ).ports[0]!.externalPolicyLocal;
  assert.equal(mk("LoadBalancer", []), true);
  assert.equal(mk("NodePort", []), true);
  assert.equal(mk("ClusterIP", ["1.1.1.1"]), true);
  assert.equal(mk("ClusterIP", []), false);
  assert.equal(mk(undefined, ["1.1.1.1"]), false, "empty type is not ClusterIP");
  const itp = servicePortsForFamily(
    svc("ns", "a", { clusterIP: "10.0.0.1", ports: p80, internalTrafficPolicy: "Local" }),
    "IPv4",
  ).ports[0]!;
  assert.equal(itp.internalPolicyLocal, true);
});

test("healthCheckNodePort only for eTP=Local LoadBalancers; missing one is a warning", () => {
  const lb = (hc: number | undefined, type = "LoadBalancer", etp = "Local") =>
    servicePortsForFamily(
      svc("ns", "a", {
        type,
        clusterIP: "10.0.0.1",
        ports: p80,
        externalTrafficPolicy: etp,
        healthCheckNodePort: hc,
      }),
      "IPv4",
    );
  assert.equal(lb(30000).ports[0]!.healthCheckNodePort, 30000);
  assert.equal(lb(30000, "NodePort").ports[0]!.healthCheckNodePort, 0);
  assert.equal(lb(30000, "LoadBalancer", "Cluster").ports[0]!.healthCheckNodePort, 0);
  const missing = lb(undefined);
  assert.equal(missing.ports[0]!.healthCheckNodePort, 0);
  assert.deepEqual(
    missing.warnings.map((w) => w.field),
    ["spec.healthCheckNodePort"],
  );
});

test("port-level helpers: externallyAccessible, usesClusterEndpoints, usesLocalEndpoints", () => {
  const base = servicePortsForFamily(svc("ns", "a", { clusterIP: "10.0.0.1", ports: p80 }), "IPv4").ports[0]!;
  const cases = [
    { sp: base, ext: false, cluster: true, local: false },
    { sp: { ...base, internalPolicyLocal: true }, ext: false, cluster: false, local: true },
    { sp: { ...base, internalPolicyLocal: true, nodePort: 30001 }, ext: true, cluster: true, local: true },
    { sp: { ...base, externalPolicyLocal: true, nodePort: 30001 }, ext: true, cluster: true, local: true },
    { sp: { ...base, externalPolicyLocal: true }, ext: false, cluster: true, local: false },
    { sp: { ...base, externalIPs: ["1.1.1.1"] }, ext: true, cluster: true, local: false },
    {
      sp: { ...base, loadBalancerVIPs: ["1.1.1.1"], externalPolicyLocal: true },
      ext: true,
      cluster: true,
      local: true,
    },
  ];
  cases.forEach((c, i) => {
    assert.equal(externallyAccessible(c.sp), c.ext, `case ${i} ext`);
    assert.equal(usesClusterEndpoints(c.sp), c.cluster, `case ${i} cluster`);
    assert.equal(usesLocalEndpoints(c.sp), c.local, `case ${i} local`);
  });
});

test("unnamed single port keys by ns/name and protocol", () => {
  const sp = servicePortsForFamily(
    svc("ns1", "svc1", { clusterIP: "10.0.0.1", ports: [{ port: 53, protocol: "UDP" }] }),
    "IPv4",
  ).ports[0]!;
  assert.equal(servicePortNameString(sp.name), "ns1/svc1");
  assert.equal(servicePortKey(sp.name), "ns1/svc1/UDP");
});
