import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultConfiguration } from "../../../src/config/types.ts";
import { localDetectorFor, primaryNodeIP, type NodeInfo } from "../../../src/proxy/node.ts";

test("NodeCIDR: the detector matches on the parsed pod CIDR (masked, no leading zeros), per family", () => {
  const config = { ...defaultConfiguration(), detectLocalMode: "NodeCIDR" as const };
  const node: NodeInfo = {
    name: "node-1",
    ips: [],
    podCIDRs: ["010.244.0.7/024", "fd00:10::1/64"],
    labels: {},
  };
  assert.deepEqual(localDetectorFor(config, node, "IPv4"), { mode: "NodeCIDR", cidr: "10.244.0.0/24" });
  assert.deepEqual(localDetectorFor(config, node, "IPv6"), { mode: "NodeCIDR", cidr: "fd00:10::/64" });
  assert.deepEqual(localDetectorFor(config, { ...node, podCIDRs: [] }, "IPv4"), { mode: "None" });
});

test("primaryNodeIP: bindAddress when it is a node IP of the family; unspecified spellings fall through to the Node", () => {
  const node: NodeInfo = { name: "n", ips: ["10.0.0.5", "fd00::5"], podCIDRs: [], labels: {} };
  assert.equal(primaryNodeIP({ bindAddress: "10.0.0.9" }, node, "IPv4"), "10.0.0.9");
  assert.equal(primaryNodeIP({ bindAddress: "10.0.0.9" }, node, "IPv6"), "fd00::5");
  for (const unspecified of ["0.0.0.0", "::", "0:0::0", "000.0.0.0"]) {
    assert.equal(primaryNodeIP({ bindAddress: unspecified }, node, "IPv4"), "10.0.0.5", unspecified);
    assert.equal(primaryNodeIP({ bindAddress: unspecified }, node, "IPv6"), "fd00::5", unspecified);
  }
  const bare: NodeInfo = { name: "n", ips: [], podCIDRs: [], labels: {} };
  assert.equal(primaryNodeIP({ bindAddress: "" }, bare, "IPv4"), "127.0.0.1");
  assert.equal(primaryNodeIP({ bindAddress: "" }, bare, "IPv6"), "::1");
});
