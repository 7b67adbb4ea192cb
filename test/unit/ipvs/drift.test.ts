/**
 * ipvs mode's drift check on the node recorded in the VM (test/fixtures/ipvs/node.dump, and
 * node.ipset-list, `ipset list` of the same moment): the recording stands for what the proxy
 * would write, and an edited copy for the kernel someone touched; then a rendered state against
 * the kernel a sync of it leaves.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { ipvsDrift, type IpvsIntended, type IpvsKernelHeld } from "../../../src/backends/ipvs/drift.ts";
import { readIpvsDump } from "../../../src/backends/ipvs/inspect.ts";
import { formatDrift } from "../../../src/inspect/drift.ts";
import { parseIpsetList } from "../../../src/kernel/ipset.ts";
import type { IpvsServiceEntry } from "../../../src/kernel/ipvs.ts";

const fixture = (name: string) =>
  readFileSync(fileURLToPath(new URL(`../../fixtures/ipvs/${name}`, import.meta.url)), "utf8");
const reading = readIpvsDump({ text: fixture("node.dump"), origin: "node.dump" });

/** The recorded node's Services, by the ClusterIP (and NodePorts) of each. */
const SERVICES: Record<string, string> = {
  "10.1.125.152": "default/nginx",
  "10.1.0.100": "default/traced",
  "10.1.0.101": "default/traced-local",
  "10.1.0.102": "default/traced-empty",
};

const kernel: IpvsKernelHeld = {
  virtualServers: reading.virtualServers,
  ipsets: [...reading.ipsets.values()],
  iptables: reading.iptables.get("dump")!,
  boundAddresses: null,
};

const intended: IpvsIntended = {
  virtualServers: reading.virtualServers.map((e) => ({
    service: SERVICES[e.address] ?? null,
    vs: { ...e, schedFlags: [...e.schedFlags] },
    realServers: e.realServers.map((rs) => ({ address: rs.address, port: rs.port, weight: rs.weight })),
  })),
  ipsets: [...reading.ipsets.values()],
  iptables: reading.iptables.get("dump")!,
  bindAddresses: [],
};

const options = { family: "IPv4" as const, excludeCIDRs: [], draining: new Set<string>() };

/** The kernel with one virtual server edited. */
function editVS(key: string, edit: (e: IpvsServiceEntry) => IpvsServiceEntry | null): IpvsKernelHeld {
  return {
    ...kernel,
    virtualServers: kernel.virtualServers.flatMap((e) => {
      if (`${e.protocol}:${e.address}:${e.port}` !== key) return [e];
      const edited = edit(e);
      return edited === null ? [] : [edited];
    }),
  };
}

test("the recorded node against itself: in sync, nothing foreign", () => {
  const report = ipvsDrift(intended, kernel, options);
  assert.equal(report.inSync, true, formatDrift(report));
  assert.equal(report.mode, "ipvs");
  assert.deepEqual(report.foreign, []);
  assert.match(formatDrift(report), /^ipvs IPv4: in sync/);
});

test("the `ipset list` of the same moment reads as the same sets: in sync", () => {
  const listed = parseIpsetList(fixture("node.ipset-list"));
  assert.ok(listed.length > 0);
  const report = ipvsDrift(intended, { ...kernel, ipsets: listed }, options);
  assert.equal(report.inSync, true, formatDrift(report));
});

test("a deleted real server: the Service's virtual server changed, the real server missing", () => {
  const k = editVS("TCP:10.1.0.100:80", (e) => ({ ...e, realServers: e.realServers.slice(1) }));
  const report = ipvsDrift(intended, k, options);
  assert.equal(report.inSync, false);
  assert.equal(report.differences, 1);
  assert.deepEqual(report.services, [
    {
      service: "default/traced",
      objects: [
        {
          kind: "virtual-server",
          table: "ipvs",
          name: "TCP:10.1.0.100:80",
          change: "changed",
          missing: ["-a -t 10.1.0.100:80 -r 10.244.0.11:80 -m -w 1"],
          extra: [],
          reordered: false,
        },
      ],
    },
  ]);
});

test("an extra real server and a changed weight are extra and changed; a draining one is not drift", () => {
  const extraRS = {
    address: "10.244.0.99",
    port: 80,
    forward: "Masq",
    weight: 1,
    activeConn: 0,
    inactiveConn: 0,
  };
  const k = editVS("TCP:10.1.125.152:80", (e) => ({
    ...e,
    realServers: [{ ...e.realServers[0]!, weight: 3 }, ...e.realServers.slice(1), extraRS],
  }));
  const report = ipvsDrift(intended, k, options);
  assert.equal(report.differences, 3);
  const [nginx] = report.services;
  assert.equal(nginx?.service, "default/nginx");
  assert.deepEqual(nginx.objects[0]?.missing, ["-a -t 10.1.125.152:80 -r 10.244.0.9:80 -m -w 1"]);
  assert.deepEqual(nginx.objects[0]?.extra, [
    "-a -t 10.1.125.152:80 -r 10.244.0.9:80 -m -w 3",
    "-a -t 10.1.125.152:80 -r 10.244.0.99:80 -m -w 1",
  ]);
  const text = formatDrift(report);
  assert.match(text, /Service default\/nginx:\n {4}virtual-server ipvs TCP:10\.1\.125\.152:80: changed/);
  assert.match(text, /\+ extra: {3}-a -t 10\.1\.125\.152:80 -r 10\.244\.0\.99:80 -m -w 1/);

  const draining = editVS("TCP:10.1.125.152:80", (e) => ({
    ...e,
    realServers: [...e.realServers, { ...extraRS, weight: 0, activeConn: 2 }],
  }));
  const kept = new Set(["TCP:10.1.125.152:80/10.244.0.99:80"]);
  assert.equal(ipvsDrift(intended, draining, { ...options, draining: kept }).inSync, true);
  assert.equal(ipvsDrift(intended, draining, { ...options, draining: "weight-zero" }).inSync, true);
  assert.equal(ipvsDrift(intended, draining, options).differences, 1);
});

test("a changed scheduler and a virtual server nobody wants", () => {
  const k = editVS("TCP:10.1.0.102:80", (e) => ({ ...e, scheduler: "wrr" }));
  const stray: IpvsServiceEntry = {
    protocol: "UDP",
    address: "10.1.0.100",
    port: 53,
    scheduler: "rr",
    persistence: 0,
    schedFlags: [],
    realServers: [],
  };
  const report = ipvsDrift(intended, { ...k, virtualServers: [...k.virtualServers, stray] }, options);
  assert.deepEqual(
    report.services.map((s) => [
      s.service,
      s.objects.map((o) => `${o.name} ${o.change} -${o.missing} +${o.extra}`),
    ]),
    [
      ["default/traced", ["UDP:10.1.0.100:53 extra - +-A -u 10.1.0.100:53 -s rr"]],
      [
        "default/traced-empty",
        ["TCP:10.1.0.102:80 changed --A -t 10.1.0.102:80 -s rr +-A -t 10.1.0.102:80 -s wrr"],
      ],
    ],
  );
});

test("a missing ipset member is the Service's; a foreign set, chain and rule are foreign, not drift", () => {
  const clusterIPs = reading.ipsets.get("KUBE-CLUSTER-IP")!;
  const member = clusterIPs.entries.find((e) => e.startsWith("10.1.0.101,"))!;
  const k: IpvsKernelHeld = {
    ...kernel,
    ipsets: [
      ...[...reading.ipsets.values()].map((s) =>
        s.name === clusterIPs.name ? { ...s, entries: s.entries.filter((e) => e !== member) } : s,
      ),
      { name: "my-allowlist", entries: ["192.0.2.1"] },
    ],
    iptables: kernel.iptables
      .replace(":KUBE-FORWARD - [0:0]", ":KUBE-FORWARD - [0:0]\n:MY-CHAIN - [0:0]")
      .replace(/\nCOMMIT/, "\n-A INPUT -s 192.0.2.0/24 -j MY-CHAIN\nCOMMIT"),
  };
  const report = ipvsDrift(intended, k, options);
  assert.equal(report.differences, 1, formatDrift(report));
  assert.deepEqual(report.services, [
    {
      service: "default/traced-local",
      objects: [
        {
          kind: "ipset",
          table: "ipset",
          name: "KUBE-CLUSTER-IP",
          change: "changed",
          missing: [member],
          extra: [],
          reordered: false,
        },
      ],
    },
  ]);
  assert.deepEqual(
    report.foreign
      .map((f) => `${f.kind} ${f.table} ${f.name}${f.rule === undefined ? "" : ` ${f.rule}`}`)
      .sort(),
    [
      "chain filter MY-CHAIN",
      "ipset ipset my-allowlist",
      "rule filter INPUT -A INPUT -s 192.0.2.0/24 -j MY-CHAIN",
    ],
  );
});

test("a virtual server --ipvs-exclude-cidrs covers is foreign; the other family's are not this report's", () => {
  const theirs: IpvsServiceEntry = {
    protocol: "TCP",
    address: "172.30.0.5",
    port: 443,
    scheduler: "wlc",
    persistence: 0,
    schedFlags: [],
    realServers: [
      { address: "172.30.1.1", port: 443, forward: "Route", weight: 1, activeConn: 0, inactiveConn: 0 },
    ],
  };
  const v6 = { ...theirs, address: "fd00::5" };
  const k = { ...kernel, virtualServers: [...kernel.virtualServers, theirs, v6] };
  const report = ipvsDrift(intended, k, { ...options, excludeCIDRs: ["172.30.0.0/16"] });
  assert.equal(report.inSync, true, formatDrift(report));
  assert.deepEqual(report.foreign, [{ kind: "virtual-server", table: "ipvs", name: "TCP:172.30.0.5:443" }]);
  assert.match(
    formatDrift(report),
    /foreign \(not the proxy's, left alone; not drift\): 1\n {4}virtual-server ipvs TCP:172\.30\.0\.5:443/,
  );
  // Not excluded, it is one the full sync deletes: drift.
  assert.equal(ipvsDrift(intended, k, options).services[0]?.objects[0]?.change, "extra");
});

test("a deleted jump rule and kube-ipvs0's addresses", () => {
  const k: IpvsKernelHeld = {
    ...kernel,
    iptables: kernel.iptables.replace(
      /^.*-A OUTPUT -m comment --comment "kubernetes service portals".*\n/m,
      "",
    ),
    boundAddresses: ["10.1.125.152", "10.1.0.200"],
  };
  const report = ipvsDrift({ ...intended, bindAddresses: ["10.1.0.100", "10.1.125.152"] }, k, options);
  assert.deepEqual(
    report.services.map((s) => [
      s.service,
      s.objects.map((o) => `${o.kind} ${o.name} -${o.missing} +${o.extra}`),
    ]),
    [
      [
        null,
        [
          'chain OUTPUT --A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES +',
          "interface kube-ipvs0 - +10.1.0.200",
        ],
      ],
      ["default/traced", ["interface kube-ipvs0 -10.1.0.100 +"]],
    ],
  );
});
