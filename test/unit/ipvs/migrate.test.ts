/**
 * `migrate --from ipvs --to nftables` on scenarios where each difference occurs
 * (test/fixtures/ipvs/migrate/scenarios.yaml), and on a control Service where it does not.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import type { MigrationReport } from "../../../src/backends/ipvs/migrate.ts";
import { migrateCommand, parseIpvsTimeouts } from "../../../src/cli/migrate.ts";
import type { Runner } from "../../../src/kernel/exec.ts";

const SCENARIOS = fileURLToPath(new URL("../../fixtures/ipvs/migrate/scenarios.yaml", import.meta.url));
const base = {
  from: "ipvs",
  to: "nftables",
  filename: [SCENARIOS],
  hostnameOverride: "node-1",
  output: "json",
};

async function report(extra: Record<string, unknown> = {}, runner?: Runner): Promise<MigrationReport> {
  return JSON.parse(await migrateCommand({ ...base, ...extra }, runner)) as MigrationReport;
}

const ids = (r: MigrationReport, service: string): string[] =>
  [...new Set(r.services.find((s) => s.service === service)!.findings.map((f) => f.id))].sort();

test("each scenario shows its own difference, and only the ones it has", async () => {
  const r = await report();
  assert.deepEqual(ids(r, "demo/plain"), ["undefined-ports"]);
  assert.deepEqual(ids(r, "demo/sticky"), [
    "affinity-scope",
    "affinity-timeout",
    "nodeport-addresses",
    "undefined-ports",
  ]);
  assert.deepEqual(ids(r, "demo/ext"), ["strict-arp", "undefined-ports", "vip-hijack"]);
  assert.deepEqual(ids(r, "demo/ext-node"), ["undefined-ports"], "a node address is not bound, nor hijacked");
  assert.deepEqual(
    ids(r, "demo/itp"),
    ["nodeport-addresses", "undefined-ports", "itp-local-fallback"].sort(),
  );
  assert.deepEqual(ids(r, "demo/etp"), ["etp-local-fallback", "nodeport-addresses", "undefined-ports"]);
  const sticky = r.services.find((s) => s.service === "demo/sticky")!;
  assert.match(sticky.findings.find((f) => f.id === "affinity-timeout")!.summary, /600s/);
  assert.match(
    sticky.findings.find((f) => f.id === "nodeport-addresses")!.summary,
    /30012\/TCP stops answering on 10\.0\.9\.1/,
  );
  assert.ok(
    sticky.unchanged.some((u) => /127\.0\.0\.1/.test(u)),
    "localhost NodePorts: the same in both modes",
  );
  const extNode = r.services.find((s) => s.service === "demo/ext-node")!;
  assert.ok(extNode.unchanged.some((u) => u.startsWith("192.168.50.1 is a node address")));
  assert.deepEqual(
    r.node.map((f) => f.id),
    ["strict-arp", "connection-timeouts", "kube-ipvs0-removed"],
  );
});

test("a scheduler other than rr is a difference for every Service; sh also loses per-client stickiness", async () => {
  assert.ok((await report()).services.every((s) => !s.findings.some((f) => f.id === "scheduler")));
  const r = await report({ ipvsScheduler: "sh" });
  for (const s of r.services) {
    const f = s.findings.find((x) => x.id === "scheduler");
    assert.ok(f !== undefined, s.service);
    assert.match(f.ipvs, /sessionAffinity: ClientIP/);
  }
});

test("with --ipvs-strict-arp the per-Service ARP finding goes and the node keeps the sysctls", async () => {
  const r = await report({ ipvsStrictArp: true });
  assert.ok(!ids(r, "demo/ext").includes("strict-arp"));
  assert.match(r.node.find((f) => f.id === "strict-arp")!.summary, /stay set/);
});

test("--nodeport-addresses given: no NodePort address is lost", async () => {
  const r = await report({ nodeportAddresses: ["192.168.50.0/24", "10.0.9.0/24"] });
  assert.ok(r.services.every((s) => !s.findings.some((f) => f.id === "nodeport-addresses")));
});

test("--live reads the real scheduler of each virtual server and the IPVS timeouts", async () => {
  const calls: string[] = [];
  const runner: Runner = {
    async run(argv) {
      calls.push(argv.join(" "));
      const out = (stdout: string) => ({ argv, exitCode: 0, stdout, stderr: "", durationMs: 1 });
      if (argv.join(" ") === "ipvsadm -Ln --exact")
        return out(
          "IP Virtual Server version 1.2.1 (size=4096)\nTCP  10.96.0.11:80 wrr\n  -> 10.244.2.7:80 Masq 1 0 0\n",
        );
      if (argv.join(" ") === "ipvsadm -L --timeout") return out("Timeout (tcp tcpfin udp): 3600 60 30\n");
      if (argv[0] === "ip")
        return out(
          JSON.stringify([{ ifname: "eth0", addr_info: [{ local: "192.168.50.1", prefixlen: 24 }] }]),
        );
      throw new Error(`unexpected ${argv.join(" ")}`);
    },
  };
  const r = await report({ live: true }, runner);
  assert.ok(ids(r, "demo/plain").includes("scheduler"), "wrr found in the kernel");
  assert.ok(
    !ids(r, "demo/ext").includes("scheduler"),
    "its virtual servers are not in the kernel: the configured rr",
  );
  assert.match(r.node.find((f) => f.id === "connection-timeouts")!.summary, /tcp 3600s, tcpfin 60s, udp 30s/);
  assert.ok(!ids(r, "demo/sticky").includes("nodeport-addresses"), "the live node has one address only");
  assert.deepEqual(parseIpvsTimeouts("junk"), null);
});

test("text output and bad arguments", async () => {
  const text = await migrateCommand({ ...base, output: "text" });
  assert.match(text, /^Migration from ipvs to nftables/);
  assert.match(text, /demo\/ext: 3 difference\(s\)/);
  await assert.rejects(migrateCommand({ ...base, to: "iptables" }), /only --from ipvs --to nftables/);
  await assert.rejects(migrateCommand({ from: "ipvs", to: "nftables" }), /-f\/--manifests or --api/);
});
