import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { nodeManifest, WEB, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { endpointSlice, service, sleep } from "../../support/daemon.ts";
import type { ProxyDaemon } from "../../support/daemon.ts";
import { TRAFFIC_MODES } from "../../support/service-matrix.ts";

/*
 * A daemon SIGKILLed in the middle of its first full sync (iptables mode: 2,000 Services in
 * chunked transactions on iptables-nft; nftables mode: 5,000 Services, 250 per netlink
 * transaction, so that the sync lasts long enough to be caught half-way) leaves a partial
 * ruleset behind; started again, it must end with exactly the full one (every Service captured,
 * one chain each, no duplicate) and a client must reach a Service's ClusterIP. Figures are
 * printed for docs/reliability.md.
 */

const NODE = WEB.node;
const POD = "web-a";
const POD_IP = WEB.pods["web-a"];

const vip = (n: number): string => `10.1.${Math.floor(n / 250)}.${(n % 250) + 1}`;
/** Service 0's endpoint is the real pod; the others point at addresses nobody answers on. */
const endpointIP = (n: number): string =>
  n === 0 ? POD_IP : `10.244.${1 + Math.floor(n / 250)}.${(n % 250) + 1}`;

function manifests(services: number): Record<string, unknown>[] {
  const docs: Record<string, unknown>[] = [];
  for (let n = 0; n < services; n++) {
    docs.push(service({ name: `svc${n}`, clusterIP: vip(n), ports: [{ name: "http", port: 80 }] }));
    docs.push(
      endpointSlice({
        service: `svc${n}`,
        endpoints: [{ ip: endpointIP(n), node: NODE }],
        ports: [{ name: "http", port: 80 }],
      }),
    );
  }
  return docs;
}

/** What the mode holds of the Services: their chains, and the Services its dispatch captures. */
interface Holdings {
  readonly chains: number;
  readonly captured: number;
  /** Capture entries (rules or map elements), duplicates included. */
  readonly captures: number;
  readonly endpointChains: number;
}

const iptablesHoldings = async (daemon: ProxyDaemon): Promise<Holdings> => {
  const save = await daemon.save("IPv4", "nat");
  const lines = save.split("\n");
  const captured = new Set<string>();
  for (const m of save.matchAll(/^-A KUBE-SERVICES .*--comment "default\/(svc\d+):http cluster IP"/gm))
    captured.add(m[1]!);
  return {
    chains: lines.filter((l) => /^:KUBE-SVC-/.test(l)).length,
    captured: captured.size,
    captures: lines.filter((l) => /^-A KUBE-SERVICES .*cluster IP"/.test(l)).length,
    endpointChains: lines.filter((l) => /^:KUBE-SEP-/.test(l)).length,
  };
};

/** nftables mode's Service chains (`nft list chains` takes a family, not a table: ours is the only one). */
const nftServiceChains = (chains: string): number =>
  (chains.match(/chain service-[A-Z2-7]{8}-default\/svc\d+\//g) ?? []).length;

async function nftablesHoldings(list: (...args: string[]) => Promise<string>): Promise<Holdings> {
  const chains = await list("list", "chains", "ip");
  const map = await list("list", "map", "ip", "kube-proxy", "service-ips");
  const captures = [...map.matchAll(/ : goto service-[A-Z2-7]{8}-default\/(svc\d+)\/tcp\/http/g)];
  return {
    chains: nftServiceChains(chains),
    captured: new Set(captures.map((m) => m[1])).size,
    captures: captures.length,
    endpointChains: (chains.match(/chain endpoint-[A-Z2-7]{8}-default\/svc\d+\//g) ?? []).length,
  };
}

for (const mode of TRAFFIC_MODES)
  describe(`SIGKILL during the first chunked full sync (${mode} mode)`, { timeout: 600_000 }, () => {
    const services = mode === "iptables" ? 2_000 : 5_000;
    const env = withDaemonSandbox({
      prefix: "kptkill",
      mode,
      pods: { [POD]: POD_IP },
      podServer: { readyTimeoutMs: 30_000 },
    });
    const nft = async (...args: string[]) =>
      (await env.sandbox.exec(NODE, ["nft", ...args], { okExitCodes: [0, 1], timeoutMs: 60_000 })).stdout;
    const holdings = (d: ProxyDaemon): Promise<Holdings> =>
      mode === "iptables" ? iptablesHoldings(d) : nftablesHoldings(nft);
    /** Only the chains, while polling for the half-way point (quicker than the whole holdings). */
    const chainCount = async (d: ProxyDaemon): Promise<number> =>
      mode === "iptables"
        ? (await iptablesHoldings(d)).chains
        : nftServiceChains(await nft("list", "chains", "ip"));

    it("ends with the full ruleset after a restart, and the ClusterIP answers", async () => {
      const d = await env.spawnOnly({
        manifests: { ...nodeManifest(), "services.yaml": manifests(services) },
        startTimeoutMs: 240_000,
      });
      const started = Date.now();
      // Poll until some but not all Service chains exist; bounded in time and count.
      let atKill = 0;
      let polls = 0;
      for (; polls < 3000 && Date.now() - started < 120_000; polls++) {
        const n = await chainCount(d);
        if (n > 0 && n < services) {
          atKill = n;
          break;
        }
        if (n >= services) break;
        if (!d.running) break;
        await sleep(20);
      }
      const killedAfterMs = Date.now() - started;
      assert.ok(
        atKill > 0,
        `never saw a partial ruleset (polls ${polls}, ${killedAfterMs} ms)${d.logTail()}`,
      );
      await d.kill();
      const partial = await holdings(d);

      const restarted = Date.now();
      await d.relaunch();
      let full = partial;
      for (let i = 0; i < 600 && Date.now() - restarted < 120_000; i++) {
        full = await holdings(d);
        if (full.captured === services && full.chains === services) break;
        await sleep(200);
      }
      const recoveredMs = Date.now() - restarted;
      // Exactly the full ruleset: no duplicate capture, no leftover chain.
      assert.deepEqual(
        full,
        { chains: services, captured: services, captures: services, endpointChains: services },
        d.logTail(),
      );

      const { stdout } = await env.sandbox.exec(
        WEB.client,
        ["curl", "-s", "--max-time", "5", `http://${vip(0)}:80/`],
        {
          timeoutMs: 15_000,
        },
      );
      assert.match(stdout, new RegExp(POD), `no answer from ${POD} through ${vip(0)}${d.logTail()}`);
      console.log(
        `kill-mid-sync (${mode}): ${JSON.stringify({ services, killedAfterMs, polls, chainsAtKill: atKill, chainsAfterKill: partial.chains, capturedAfterKill: partial.captured, recoveredMs })}`,
      );
    });
  });
