/**
 * `kube-proxy-ts diff --proxy-mode ipvs` on a scripted node: the kernel answers with what
 * `render --proxy-mode ipvs` says a full sync writes (ipvsadm -Ln, ipset save, iptables-save
 * with the jump rules, kube-ipvs0's addresses), then with one real server gone.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { withJumpRules } from "../../../src/backends/ipvs/drift.ts";
import { readIpvsDump } from "../../../src/backends/ipvs/inspect.ts";
import { diffCommand } from "../../../src/cli/diff.ts";
import { renderCommand } from "../../../src/cli/render.ts";
import type { ExecOptions, ExecResult, Runner } from "../../../src/kernel/exec.ts";
import type { IpvsServiceEntry } from "../../../src/kernel/ipvs.ts";
import { endpointSlice, service } from "../../support/daemon.ts";

const NODE = { hostnameOverride: "n1", ipFamily: "IPv4", proxyMode: "ipvs" };
const dir = mkdtempSync(join(tmpdir(), "kpt-ipvs-diff-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const objects = join(dir, "objects.json");
writeFileSync(
  objects,
  JSON.stringify({
    apiVersion: "v1",
    kind: "List",
    items: [
      service({ name: "web", clusterIP: "10.1.0.10", ports: [{ port: 80 }] }),
      endpointSlice({
        service: "web",
        endpoints: [
          { ip: "10.244.0.5", node: "n1" },
          { ip: "10.244.0.6", node: "n1" },
        ],
        ports: [{ port: 80 }],
      }),
    ],
  }),
);

/** `ipvsadm -Ln --exact` of these virtual servers. */
function ipvsadmList(entries: readonly IpvsServiceEntry[]): string {
  const lines = [
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
  ];
  for (const e of entries) {
    lines.push(`${e.protocol}  ${e.address}:${e.port} ${e.scheduler}`);
    for (const rs of e.realServers)
      lines.push(`  -> ${rs.address}:${rs.port}   Masq    ${rs.weight}      0          0`);
  }
  return lines.join("\n") + "\n";
}

class NodeRunner implements Runner {
  constructor(private readonly answers: Readonly<Record<string, string>>) {}
  run(argv: readonly string[], _options?: ExecOptions): Promise<ExecResult> {
    const key = argv.includes("--stats") ? "ipvsadm-stats" : (argv[0] ?? "");
    const stdout = this.answers[key];
    if (stdout === undefined) return Promise.reject(new Error(`no such tool here: ${argv.join(" ")}`));
    return Promise.resolve({ argv, exitCode: 0, stdout, stderr: "", durationMs: 0 });
  }
}

async function node(edit: (e: readonly IpvsServiceEntry[]) => readonly IpvsServiceEntry[] = (e) => e) {
  const rendered = await renderCommand({ filename: [objects], ...NODE });
  const reading = readIpvsDump({ text: rendered, origin: "render" });
  const section = (title: string) => rendered.split(`# ${title}\n`)[1]!.split(/^# /m)[0]!;
  return new NodeRunner({
    ipvsadm: ipvsadmList(edit(reading.virtualServers)),
    "ipvsadm-stats": "",
    ipset: section("ipset -exist restore"),
    "iptables-nft-save": withJumpRules(section("iptables-restore --noflush")),
    ip: JSON.stringify([
      { ifname: "lo", addr_info: [{ local: "127.0.0.1", prefixlen: 8 }] },
      { ifname: "kube-ipvs0", addr_info: [{ local: "10.1.0.10", prefixlen: 32 }] },
    ]),
  });
}

test("a node holding what a full sync writes is in sync; a deleted real server is the Service's drift", async () => {
  const clean = await diffCommand({ filename: [objects], ...NODE }, await node());
  assert.match(
    clean,
    /^kernel: live \(ipvsadm -Ln --exact, ipset save, iptables-save, ip addr \(kube-ipvs0\)\)\n/,
  );
  assert.match(clean, /ipvs IPv4: in sync/);
  assert.doesNotMatch(clean, /foreign/);

  const drifted = await diffCommand(
    { filename: [objects], ...NODE, output: "json" },
    await node((entries) => entries.map((e) => ({ ...e, realServers: e.realServers.slice(1) }))),
  );
  const [report] = (JSON.parse(drifted) as { reports: { differences: number; services: unknown[] }[] })
    .reports;
  assert.equal(report?.differences, 1);
  assert.deepEqual(report.services, [
    {
      service: "default/web",
      objects: [
        {
          kind: "virtual-server",
          table: "ipvs",
          name: "TCP:10.1.0.10:80",
          change: "changed",
          missing: ["-a -t 10.1.0.10:80 -r 10.244.0.5:80 -m -w 1"],
          extra: [],
          reordered: false,
        },
      ],
    },
  ]);
  await assert.rejects(
    diffCommand({ filename: [objects], ...NODE, ruleset: "x" }, await node()),
    /live kernel only/,
  );
});
