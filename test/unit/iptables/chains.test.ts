import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { formatMasqueradeMark } from "../../../src/proxy/node.ts";
import {
  JUMP_CHAINS,
  computeProbability,
  endpointChainName,
  firewallChainName,
  formatFixed10,
  hash16,
  isServiceChainName,
  serviceChainName,
  serviceLocalChainName,
} from "../../../src/backends/iptables/chains.ts";
import { jumpRuleArgs } from "../../../src/kernel/iptables.ts";

test("hash16 matches docs/iptables.md §1.3 worked examples", () => {
  const vectors: [string, string][] = [
    ["ns1/svc1:p80tcp", "XPGD46QRK7WJZT7O"],
    ["ns2/svc2:p80tcp", "GNZBNJ2PO5MGZ6GT"],
    ["ns5/svc5:p80tcp", "NUKIZ6OKUXPJNT4C"],
    ["ns2/svc2:p8080tcp", "2VJB64SDSIJUP5T6"],
    ["ns4/svc4:p8082tcp", "EBDQOQU5SJFXRIL3"],
    ["ns1/svc1:p80tcp10.180.0.1:80", "SXIVWICOYRO3J4NJ"],
    ["ns5/svc5:p80tcp10.180.0.3:80", "I77PXRDZVX7PMWMN"],
    ["ns1/svc1:p80tcp10.0.0.0:80", "DKGQUZGBKLTPAR56"],
    ["ns3/svc3:p8081tcp203.0.113.4:8081", "RUVVH7YV3PHQBDOS"],
    ["ns4/svc4:p8082tcp10.4.0.1:8082", "SU5STNODRYEWJAUF"],
    ["ns1/svc1tcp", "AQI2S6QIMU7PVVRP"],
    ["ns1/svc1:p80udp", "OJWW7NSBVZTDHXNW"],
    ["ns1/svc1:p80tcp[fd00:10:180::1]:80", "OGYCNMB4EMRUSJ6N"],
  ];
  for (const [input, want] of vectors) assert.equal(hash16(input), want, input);
});

test("hash16 equals Node's own base32-free computation for arbitrary strings", () => {
  fc.assert(
    fc.property(fc.string(), (s) => {
      const h = hash16(s);
      assert.match(h, /^[A-Z2-7]{16}$/);
      assert.equal(hash16(s), h);
    }),
  );
});

test("chain names use upstream prefixes and lowercase protocol", () => {
  assert.equal(serviceChainName("ns1/svc1:p80", "TCP"), "KUBE-SVC-XPGD46QRK7WJZT7O");
  assert.equal(serviceLocalChainName("ns2/svc2:p80", "TCP"), "KUBE-SVL-GNZBNJ2PO5MGZ6GT");
  assert.equal(firewallChainName("ns5/svc5:p80", "tcp"), "KUBE-FW-NUKIZ6OKUXPJNT4C");
  assert.equal(endpointChainName("ns1/svc1:p80", "TCP", "10.180.0.1:80"), "KUBE-SEP-SXIVWICOYRO3J4NJ");
});

test("isServiceChainName recognises only per-service chains", () => {
  for (const c of ["KUBE-SVC-X", "KUBE-SVL-X", "KUBE-SEP-X", "KUBE-FW-X", "KUBE-EXT-X"])
    assert.ok(isServiceChainName(c), c);
  for (const c of [
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-MARK-MASQ",
    "KUBE-FIREWALL",
    "DOCKER",
  ]) {
    assert.ok(!isServiceChainName(c), c);
  }
});

test("formatMasqueradeMark is Go %#08x", () => {
  assert.equal(formatMasqueradeMark(14), "0x00004000");
  assert.equal(formatMasqueradeMark(0), "0x00000001");
  assert.equal(formatMasqueradeMark(31), "0x80000000");
  assert.throws(() => formatMasqueradeMark(32), RangeError);
});

test("computeProbability matches upstream TestComputeProbability", () => {
  const vectors: [number, string][] = [
    [1, "1.0000000000"],
    [2, "0.5000000000"],
    [3, "0.3333333333"],
    [10, "0.1000000000"],
    [100, "0.0100000000"],
    [1000, "0.0010000000"],
    [10000, "0.0001000000"],
    [100000, "0.0000100000"],
    [100001, "0.0000099999"],
    [2048, "0.0004882812"],
  ];
  for (const [k, want] of vectors) assert.equal(computeProbability(k), want, String(k));
  let previous = computeProbability(100000);
  for (let k = 99999; k >= 1; k--) {
    const p = computeProbability(k);
    assert.ok(p > previous, `${k}: ${p} > ${previous}`);
    previous = p;
  }
});

test("formatFixed10 agrees with toFixed(10) except on exact binary ties", () => {
  assert.equal(formatFixed10(0.00048828125), "0.0004882812");
  assert.equal(formatFixed10(0.00048828125 * 3), "0.0014648438");
  assert.equal(formatFixed10(0), "0.0000000000");
  assert.equal(formatFixed10(12.5), "12.5000000000");
  for (let k = 1; k <= 5000; k++) {
    if (k === 2048) continue;
    assert.equal(formatFixed10(1 / k), (1 / k).toFixed(10), String(k));
  }
});

test("jump chain table keeps upstream order and argv shape", () => {
  assert.equal(JUMP_CHAINS.length, 14);
  assert.deepEqual(jumpRuleArgs(JUMP_CHAINS[0]!), [
    "-m",
    "conntrack",
    "--ctstate",
    "NEW",
    "-m",
    "comment",
    "--comment",
    "kubernetes externally-visible service portals",
    "-j",
    "KUBE-EXTERNAL-SERVICES",
  ]);
  assert.deepEqual(jumpRuleArgs(JUMP_CHAINS[13]!), ["-j", "KUBE-FIREWALL"]);
  assert.deepEqual(
    JUMP_CHAINS.filter((j) => j.table === "nat").map((j) => `${j.srcChain}>${j.dstChain}`),
    ["OUTPUT>KUBE-SERVICES", "PREROUTING>KUBE-SERVICES", "POSTROUTING>KUBE-POSTROUTING"],
  );
});
