import { test } from "node:test";
import assert from "node:assert/strict";
import { deleteUdpFlow, listUdpEntries, reconcileUdpConntrack } from "../../../src/kernel/conntrack.ts";
import type { UdpConntrackModel } from "../../../src/kernel/conntrack.ts";
import { runner, withNetns } from "../../support/netns.ts";

const run = (netns: string, argv: string[]) => runner.run(argv, { netns, timeoutMs: 10_000 });

/** Sends one UDP datagram from inside the namespace (a nat table makes the kernel track it). */
async function sendUdp(netns: string, ip: string, port: number, sourcePort: number): Promise<void> {
  const script = `const s=require("dgram").createSocket("${ip.includes(":") ? "udp6" : "udp4"}");
s.bind(${sourcePort},()=>s.send("x",${port},"${ip}",(e)=>{s.close();if(e)process.exit(1);}));`;
  await run(netns, ["node", "-e", script]);
}

test("conntrack list/delete on real UDP flows, and the reconciler deletes only stale ones", async () => {
  await withNetns(async (netns) => {
    await run(netns, ["ip", "addr", "add", "10.0.0.1/32", "dev", "lo"]);
    await run(netns, ["ip", "addr", "add", "10.1.0.1/32", "dev", "lo"]);
    await run(netns, ["ip", "addr", "add", "10.1.0.2/32", "dev", "lo"]);
    await run(netns, ["ip", "route", "add", "10.96.0.0/16", "dev", "lo"]);
    // Two "services", each DNATed to one backend.
    for (const [vip, backend] of [
      ["10.96.0.10", "10.1.0.1"],
      ["10.96.0.11", "10.1.0.2"],
    ] as const) {
      await run(netns, [
        "iptables-nft",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-d",
        vip,
        "-p",
        "udp",
        "--dport",
        "53",
        "-j",
        "DNAT",
        "--to-destination",
        `${backend}:5353`,
      ]);
    }
    await sendUdp(netns, "10.96.0.10", 53, 40001);
    await sendUdp(netns, "10.96.0.11", 53, 40002);
    const entries = await listUdpEntries(runner, "IPv4", { netns });
    const flows = entries.map((e) => `${e.origDst}:${e.origDport}>${e.replySrc}:${e.replySport}`).sort();
    assert.deepEqual(flows, ["10.96.0.10:53>10.1.0.1:5353", "10.96.0.11:53>10.1.0.2:5353"]);
    // 10.1.0.2 is no longer serving for 10.96.0.11; 10.1.0.1 still serves 10.96.0.10.
    const model: UdpConntrackModel = {
      frontends: new Map([
        ["10.96.0.10:53", new Set(["10.1.0.1:5353"])],
        ["10.96.0.11:53", new Set(["10.1.0.3:5353"])],
      ]),
      nodePorts: new Map(),
    };
    const result = await reconcileUdpConntrack(runner, "IPv4", model, { netns });
    assert.equal(result.deleted, 1);
    assert.deepEqual(result.failures, []);
    const left = await listUdpEntries(runner, "IPv4", { netns });
    assert.deepEqual(
      left.map((e) => e.origDst),
      ["10.96.0.10"],
    );
    // Deleting a tuple that no longer exists is not an error.
    const gone = { origDst: "10.96.0.11", origDport: 53, replySrc: "10.1.0.2", replySport: 5353 };
    assert.equal(await deleteUdpFlow(runner, "IPv4", gone, { netns }), 0);
  });
});

test("IPv6 UDP flows are listed and deleted", async () => {
  await withNetns(async (netns) => {
    await run(netns, ["ip", "-6", "addr", "add", "fd00::1/128", "dev", "lo", "nodad"]);
    await run(netns, [
      "ip6tables-nft",
      "-A",
      "OUTPUT",
      "-m",
      "conntrack",
      "--ctstate",
      "NEW",
      "-j",
      "ACCEPT",
    ]);
    await sendUdp(netns, "fd00::1", 9999, 40003);
    const entries = await listUdpEntries(runner, "IPv6", { netns });
    assert.equal(entries.length, 1);
    assert.equal(entries[0]?.origDst, "fd00::1");
    assert.equal(entries[0]?.origSport, 40003);
    const n = await deleteUdpFlow(
      runner,
      "IPv6",
      { origDst: "fd00::1", origDport: 9999, replySrc: "fd00::1", replySport: 9999 },
      { netns },
    );
    assert.equal(n, 1);
    assert.deepEqual(await listUdpEntries(runner, "IPv6", { netns }), []);
  });
});
