/**
 * The web view's iptables reader on iptables-nft keeps its reading while the nf_tables
 * generation stays (NFT_MSG_GETGEN, read in the node's namespace), and reads again after any
 * commit: an iptables-nft rule added by hand, or a table of someone else's.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { iptablesInspectionSource } from "../../../src/backends/iptables/inspect.ts";
import { Iptables } from "../../../src/kernel/iptables.ts";
import { readNftGeneration } from "../../../src/kernel/nft-generation.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import { runner, withNetns } from "../../support/netns.ts";

test("iptables-nft: the web view's reading is kept while the generation stays, read again after a commit", async () => {
  await withNetns(async (netns) => {
    const ipt = new Iptables({ runner, family: "IPv4", backend: "nft", netns });
    let saves = 0;
    const counted = {
      save: (...args: Parameters<Iptables["save"]>) => {
        saves++;
        return ipt.save(...args);
      },
    };
    const iptables = (...args: string[]) =>
      runner.run(["iptables-nft", ...args], { netns, timeoutMs: 30_000 });
    await iptables("-t", "nat", "-N", "KUBE-SERVICES");
    const clock = new FakeClock(0);
    const source = iptablesInspectionSource(runner, [counted], netns, {
      clock,
      generation: () => readNftGeneration(netns),
    });
    const first = await source.read();
    assert.match(first.dumps[0]!, /^:KUBE-SERVICES /m);
    clock.advance(1000);
    assert.equal((await source.read()).dumps[0], first.dumps[0]);
    assert.equal(saves, 1, "no commit: not saved again");
    await iptables("-t", "nat", "-A", "KUBE-SERVICES", "-d", "10.0.0.1/32", "-j", "RETURN");
    const second = await source.read();
    assert.equal(saves, 2, "a commit: saved again");
    assert.match(second.dumps[0]!, /-A KUBE-SERVICES -d 10\.0\.0\.1\/32 -j RETURN/);
    // Anyone's commit moves the generation, an nft table of someone else's too.
    const before = await readNftGeneration(netns);
    await runner.run(["nft", "add", "table", "inet", "someone-else"], { netns, timeoutMs: 30_000 });
    assert.notEqual(await readNftGeneration(netns), before);
    await source.read();
    assert.equal(saves, 3);
  });
});
