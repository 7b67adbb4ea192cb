import { test } from "node:test";
import assert from "node:assert/strict";
import { serviceEndpoints, sliceServiceName } from "../../../src/proxy/endpoints.ts";
import { DEFAULT_FEATURE_GATES } from "../../../src/proxy/serviceport.ts";
import { slice } from "./builders.ts";

const ctx4 = { family: "IPv4" as const, nodeName: "test-node", gates: DEFAULT_FEATURE_GATES };
const ctx6 = { family: "IPv6" as const, nodeName: "test-node", gates: DEFAULT_FEATURE_GATES };
const p80 = [{ name: "p80", port: 80, protocol: "TCP" }];

test("TestBadIPs endpoint: addresses[0] canonicalised, endpoint string ip:port", () => {
  const r = serviceEndpoints(
    [slice("ns1", "svc1-1", "svc1", "IPv4", [{ addresses: ["10.180.00.001"] }], p80)],
    ctx4,
  );
  const eps = r.byPort.get("ns1/svc1:p80/TCP");
  assert.deepEqual(
    eps?.map((e) => [e.ip, e.port, e.endpoint]),
    [["10.180.0.1", 80, "10.180.0.1:80"]],
  );
  assert.deepEqual(r.warnings, []);
});

test("conditions default: ready/serving when unset, terminating only when set", () => {
  const r = serviceEndpoints(
    [
      slice(
        "ns",
        "s-1",
        "s",
        "IPv4",
        [
          { addresses: ["10.0.0.1"] },
          { addresses: ["10.0.0.2"], ready: false, serving: true, terminating: true, nodeName: "test-node" },
          { addresses: ["10.0.0.3", "10.0.0.4"], ready: false, nodeName: "other", zone: "z" },
        ],
        p80,
      ),
    ],
    ctx4,
  );
  const eps = r.byPort.get("ns/s:p80/TCP")!;
  assert.deepEqual(
    eps.map((e) => [e.ip, e.ready, e.serving, e.terminating, e.isLocal, e.nodeName, e.zone]),
    [
      ["10.0.0.1", true, true, false, false, null, null],
      ["10.0.0.2", false, true, true, true, "test-node", null],
      ["10.0.0.3", false, true, false, false, "other", "z"],
    ],
  );
});

test("only named, non-zero ports; port names must match the Service port name", () => {
  const r = serviceEndpoints(
    [
      slice(
        "ns",
        "s-1",
        "s",
        "IPv4",
        [{ addresses: ["10.0.0.1"] }],
        [
          { port: 81 },
          { name: "zero", port: 0 },
          { name: "noport" },
          { name: "", port: 82, protocol: "UDP" },
          ...p80,
        ],
      ),
    ],
    ctx4,
  );
  assert.deepEqual([...r.byPort.keys()].sort(), ["ns/s/UDP", "ns/s:p80/TCP"]);
  assert.equal(r.byPort.get("ns/s/UDP")![0]!.endpoint, "10.0.0.1:82");
});

test("addressType filter, wrong-family and invalid addresses dropped with a warning", () => {
  const slices = [
    slice(
      "ns",
      "s-v4",
      "s",
      "IPv4",
      [{ addresses: ["10.0.0.1"] }, { addresses: ["fd00::1"] }, { addresses: ["junk"] }],
      p80,
    ),
    slice("ns", "s-v6", "s", "IPv6", [{ addresses: ["fd00:0::0:2"] }], p80),
    slice("ns", "s-fqdn", "s", "FQDN", [{ addresses: ["example.com"] }], p80),
  ];
  const v4 = serviceEndpoints(slices, ctx4);
  assert.deepEqual(
    v4.byPort.get("ns/s:p80/TCP")!.map((e) => e.endpoint),
    ["10.0.0.1:80"],
  );
  assert.deepEqual(
    v4.warnings.map((w) => `${w.object} ${w.field}`),
    ["EndpointSlice ns/s-v4 endpoints[1].addresses[0]", "EndpointSlice ns/s-v4 endpoints[2].addresses[0]"],
  );
  const v6 = serviceEndpoints(slices, ctx6);
  assert.deepEqual(
    v6.byPort.get("ns/s:p80/TCP")!.map((e) => e.endpoint),
    ["[fd00::2]:80"],
  );
});

test("sorted by endpoint string (byte order), deduplicated across slices preferring non-terminating", () => {
  const r = serviceEndpoints(
    [
      slice(
        "ns",
        "s-b",
        "s",
        "IPv4",
        [
          { addresses: ["10.1.1.1"], ready: false, serving: true, terminating: true },
          { addresses: ["10.1.1.11"] },
        ],
        [{ name: "p", port: 11 }],
      ),
      slice(
        "ns",
        "s-a",
        "s",
        "IPv4",
        [{ addresses: ["10.1.1.1"] }, { addresses: ["10.1.1.2"] }],
        [{ name: "p", port: 11 }],
      ),
      slice(
        "ns",
        "s-c",
        "s",
        "IPv4",
        [{ addresses: ["10.1.1.2"], ready: false, serving: false, terminating: false }],
        [{ name: "p", port: 11 }],
      ),
    ],
    ctx4,
  );
  const eps = r.byPort.get("ns/s:p/TCP")!;
  assert.deepEqual(
    eps.map((e) => e.endpoint),
    ["10.1.1.11:11", "10.1.1.1:11", "10.1.1.2:11"],
  );
  assert.equal(eps[1]!.ready, true, "the terminating duplicate did not replace the ready one");
  assert.equal(eps[2]!.ready, false, "a later non-terminating duplicate replaces");
});

test("hints: zone hints always, node hints only with PreferSameTrafficDistribution", () => {
  const s = [
    slice(
      "ns",
      "s-1",
      "s",
      "IPv4",
      [{ addresses: ["10.0.0.1"], zoneHints: ["a"], nodeHints: ["test-node"] }],
      p80,
    ),
  ];
  const on = serviceEndpoints(s, ctx4).byPort.get("ns/s:p80/TCP")![0]!;
  assert.deepEqual([...on.zoneHints!], ["a"]);
  assert.deepEqual([...on.nodeHints!], ["test-node"]);
  const off = serviceEndpoints(s, {
    ...ctx4,
    gates: { ...DEFAULT_FEATURE_GATES, PreferSameTrafficDistribution: false },
  }).byPort.get("ns/s:p80/TCP")![0]!;
  assert.equal(off.nodeHints, null);
  const empty = serviceEndpoints(
    [slice("ns", "s-1", "s", "IPv4", [{ addresses: ["10.0.0.1"], zoneHints: [] }], p80)],
    ctx4,
  ).byPort.get("ns/s:p80/TCP")![0]!;
  assert.equal(empty.zoneHints, null);
});

test("sliceServiceName needs the kubernetes.io/service-name label", () => {
  assert.equal(sliceServiceName(slice("ns", "x", "svc", "IPv4", [], [])), "ns/svc");
  assert.equal(sliceServiceName(slice("ns", "x", "", "IPv4", [], [])), null);
});
