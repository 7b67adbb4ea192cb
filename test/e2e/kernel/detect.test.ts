import { test } from "node:test";
import assert from "node:assert/strict";
import { detectBackend } from "../../../src/kernel/detect.ts";
import { runner, withNetns } from "../../support/netns.ts";

const run = (netns: string, argv: string[]) => runner.run(argv, { netns, timeoutMs: 10_000 });

test("detectBackend on real tools: empty → nft, legacy rules → legacy, kubelet hint in nft → nft", async () => {
  await withNetns(async (netns) => {
    const empty = await detectBackend(runner, { netns });
    assert.equal(empty.backend, "nft", empty.reason);
    await run(netns, ["iptables-legacy", "-A", "INPUT", "-s", "192.0.2.1", "-j", "DROP"]);
    await run(netns, ["ip6tables-legacy", "-A", "INPUT", "-s", "2001:db8::1", "-j", "DROP"]);
    const legacy = await detectBackend(runner, { netns });
    assert.equal(legacy.backend, "legacy", legacy.reason);
    assert.match(legacy.reason, /2 > 0/);
    await run(netns, ["iptables-nft", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"]);
    const hinted = await detectBackend(runner, { netns });
    assert.equal(hinted.backend, "nft", hinted.reason);
    assert.match(hinted.reason, /hint/);
  });
});

test("detectBackend: kubelet canary in legacy beats more nft rules", async () => {
  await withNetns(async (netns) => {
    await run(netns, ["iptables-legacy", "-t", "nat", "-N", "KUBE-KUBELET-CANARY"]);
    for (const ip of ["192.0.2.1", "192.0.2.2", "192.0.2.3"]) {
      await run(netns, ["iptables-nft", "-A", "INPUT", "-s", ip, "-j", "DROP"]);
    }
    const result = await detectBackend(runner, { netns });
    assert.equal(result.backend, "legacy", result.reason);
  });
});
