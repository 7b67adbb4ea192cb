import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { createMemoryCgroup } from "../../support/cgroup.ts";
import type { MemoryCgroup } from "../../support/cgroup.ts";
import { nodeManifest, WEB, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { endpointSlice, service, waitFor } from "../../support/daemon.ts";
import type { ProxyDaemon } from "../../support/daemon.ts";

/*
 * The daemon under a memory limit below its working set (a cgroup of the test's own, see
 * test/support/cgroup.ts): 2,000 Services need ~110 MB here. Whatever happens, it must not
 * half-run: either it works (every Service captured) or it ends, non-zero, and the supervisor can
 * tell why (the kernel's OOM kill is counted in the cgroup). The kernel never holds half a
 * ruleset that routes traffic: the capture rules (KUBE-SERVICES) are written after every chain
 * they jump to, so at any moment they number 0 or all 2,000.
 */

const NODE = WEB.node;
const SERVICES = 2_000;
const WRAP = fileURLToPath(new URL("../../support/with-fault.sh", import.meta.url));

const vip = (n: number): string => `10.1.${Math.floor(n / 250)}.${(n % 250) + 1}`;

function manifests(): Record<string, unknown>[] {
  const docs: Record<string, unknown>[] = [];
  for (let n = 0; n < SERVICES; n++) {
    docs.push(service({ name: `svc${n}`, clusterIP: vip(n), ports: [{ name: "http", port: 80 }] }));
    docs.push(
      endpointSlice({
        service: `svc${n}`,
        endpoints: [{ ip: `10.244.${1 + Math.floor(n / 250)}.${(n % 250) + 1}`, node: NODE }],
        ports: [{ name: "http", port: 80 }],
      }),
    );
  }
  return docs;
}

const captureRules = (save: string): number =>
  save.split("\n").filter((l) => /^-A KUBE-SERVICES .*cluster IP" .*-j KUBE-SVC-/.test(l)).length;

describe("a cgroup memory limit below the working set", () => {
  const env = withDaemonSandbox({ prefix: "kptdmem", pods: {} });

  for (const limitMB of [48, 80]) {
    it(`${limitMB} MB: the daemon works or ends non-zero, and never leaves part of the capture rules`, async (t) => {
      const cgroup: MemoryCgroup = createMemoryCgroup(limitMB * 2 ** 20);
      let daemon: ProxyDaemon | undefined;
      try {
        daemon = await env.spawnOnly({
          outside: ["sh", WRAP, "cgroup", cgroup.procs, "--"],
          manifests: { ...nodeManifest(), "services.yaml": manifests() },
        });
        const d = daemon;
        const seen = new Set<number>();
        const outcome = await waitFor(
          "the daemon to finish its first sync or to end",
          async () => {
            const save = await d.save("IPv4", "nat");
            const captured = captureRules(save);
            seen.add(captured);
            if (!d.running) return "ended" as const;
            if (captured === SERVICES) return "works" as const;
            return undefined;
          },
          180_000,
          () => d.logTail(),
        );
        for (const n of seen)
          assert.ok(n === 0 || n === SERVICES, `capture rules seen: ${[...seen].join(", ")}`);
        const oomKills = cgroup.oomKills();
        t.diagnostic(`limit ${limitMB} MB (cgroup v${cgroup.version}): ${outcome}; OOM kills ${oomKills}`);
        if (outcome === "works") {
          const metrics = await d.metrics();
          assert.match(
            metrics,
            /kubeproxy_sync_proxy_rules_last_timestamp_seconds\{ip_family="IPv4"\} [1-9]/,
          );
        } else {
          await waitFor("the exit status", async () => (d.running ? undefined : true), 10_000);
          assert.ok(
            oomKills > 0 || /Fatal error|kube-proxy-ts: /.test(d.log),
            `it ended with a reason: the kernel's OOM kill or its own message${d.logTail()}`,
          );
        }
      } finally {
        await env.stop();
        await cgroup.dispose();
        await env.sandbox.exec(NODE, ["iptables", "-t", "nat", "-F"]);
        await env.sandbox.exec(NODE, ["iptables", "-t", "nat", "-X"]);
      }
    });
  }
});
