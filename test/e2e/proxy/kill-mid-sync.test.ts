import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Sandbox } from "../../../src/sandbox/topology.ts";
import {
  disposeProxyNode,
  endpointSlice,
  nodeObject,
  ProxyDaemon,
  service,
  sleep,
  startProxyNode,
} from "../../support/daemon.ts";

/*
 * A daemon SIGKILLed in the middle of its first full sync (2,000 Services: written in chunked
 * transactions on iptables-nft) leaves a partial ruleset behind; started again, it must end
 * with exactly the full one (KUBE-SERVICES lists every Service) and a client must reach a
 * Service's ClusterIP. Figures are printed for docs/reliability.md.
 */

const NODE = "node-1";
const NODE_IP = "192.168.50.1";
const CLIENT = "client";
const SERVICES = 2000;
const POD = "web-a";
const POD_IP = "10.244.0.30";

const vip = (n: number): string => `10.1.${Math.floor(n / 250)}.${(n % 250) + 1}`;
/** Service 0's endpoint is the real pod; the others point at addresses nobody answers on. */
const endpointIP = (n: number): string =>
  n === 0 ? POD_IP : `10.244.${1 + Math.floor(n / 250)}.${(n % 250) + 1}`;

function manifests(): Record<string, unknown>[] {
  const docs: Record<string, unknown>[] = [];
  for (let n = 0; n < SERVICES; n++) {
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

const svcChains = (save: string): number => save.split("\n").filter((l) => /^:KUBE-SVC-/.test(l)).length;
const capturedServices = (save: string): Set<string> => {
  const out = new Set<string>();
  for (const m of save.matchAll(/^-A KUBE-SERVICES .*--comment "default\/(svc\d+):http cluster IP"/gm))
    out.add(m[1]!);
  return out;
};

describe("SIGKILL during the first chunked full sync", { timeout: 600_000 }, () => {
  let sandbox: Sandbox;
  let daemon: ProxyDaemon | undefined;

  before(async () => {
    sandbox = await startProxyNode("kptkill", {
      node: { name: NODE, ipv4: NODE_IP, podCIDR: "10.244.0.0/24", defaultGateways: ["192.168.50.254"] },
      client: { name: CLIENT, ipv4: "192.168.50.2", routes: ["10.1.0.0/16"] },
      pods: { [POD]: POD_IP },
      podServer: { readyTimeoutMs: 30_000 },
    });
  });

  after(() => disposeProxyNode(daemon, sandbox));

  it("ends with the full ruleset after a restart, and the ClusterIP answers", async () => {
    const d = (daemon = await ProxyDaemon.spawnOnly(sandbox, {
      node: NODE,
      args: ["--cluster-cidr", "10.244.0.0/16"],
      manifests: {
        "node.yaml": nodeObject({ name: NODE, ips: [NODE_IP], podCIDRs: ["10.244.0.0/24"] }),
        "services.yaml": manifests(),
      },
      startTimeoutMs: 240_000,
    }));
    const started = Date.now();
    // Poll until some but not all Service chains exist; bounded in time and count.
    let atKill = 0;
    let polls = 0;
    for (; polls < 3000 && Date.now() - started < 120_000; polls++) {
      const n = svcChains(await d.save("IPv4", "nat"));
      if (n > 0 && n < SERVICES) {
        atKill = n;
        break;
      }
      if (n >= SERVICES) break;
      if (!d.running) break;
      await sleep(20);
    }
    const killedAfterMs = Date.now() - started;
    assert.ok(atKill > 0, `never saw a partial ruleset (polls ${polls}, ${killedAfterMs} ms)${d.logTail()}`);
    await d.kill();
    const partial = await d.save("IPv4", "nat");
    const leftChains = svcChains(partial);
    const leftCaptured = capturedServices(partial).size;

    const restarted = Date.now();
    await d.relaunch();
    const full = await d.waitForRules(
      "every Service in KUBE-SERVICES",
      (save) => capturedServices(save).size === SERVICES && svcChains(save) === SERVICES,
      { timeoutMs: 120_000 },
    );
    const recoveredMs = Date.now() - restarted;
    // Exactly the full ruleset: no duplicate capture rule, no leftover chain.
    const captureLines = full.split("\n").filter((l) => /^-A KUBE-SERVICES .*cluster IP"/.test(l)).length;
    assert.equal(captureLines, SERVICES);
    const sepChains = full.split("\n").filter((l) => /^:KUBE-SEP-/.test(l)).length;
    assert.equal(sepChains, SERVICES);

    const { stdout } = await sandbox.exec(CLIENT, ["curl", "-s", "--max-time", "5", `http://${vip(0)}:80/`], {
      timeoutMs: 15_000,
    });
    assert.match(stdout, new RegExp(POD), `no answer from ${POD} through ${vip(0)}${d.logTail()}`);
    console.log(
      `kill-mid-sync: ${JSON.stringify({ services: SERVICES, killedAfterMs, polls, chainsAtKill: atKill, chainsAfterKill: leftChains, capturedAfterKill: leftCaptured, recoveredMs })}`,
    );
  });
});
