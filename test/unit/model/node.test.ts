import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultConfiguration } from "../../../src/config/types.ts";
import { localDetectorFor, type NodeInfo } from "../../../src/proxy/node.ts";

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
