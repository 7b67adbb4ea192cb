/**
 * Reading the nftables table back, as a full sync and the drift check do: our netlink read
 * (NLM_F_DUMP requests, decoded datagram by datagram, then compared with the rendered table)
 * against `nft -j list table ip kube-proxy` (the kernel tool's own read of the same table), in
 * the same run, in a throwaway namespace. CPU is user + system of the reading process (ours:
 * this process, the kernel's dump work included; nft: the child's, from /proc/self/stat), and
 * the heap growth of the read. Run as root:
 *
 *   node --import tsx --expose-gc bench/nftables-read.ts [SERVICES [ENDPOINTS]]
 */
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { NetlinkNftablesKernel, readTableOverNetlink } from "../src/backends/nftables/netlink-kernel.ts";
import { readTable } from "../src/backends/nftables/reader.ts";
import { renderNftables } from "../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../src/backends/nftables/settings.ts";
import { planChunkedFullSync, planFullSync } from "../src/backends/nftables/transactions.ts";
import type { Endpoint, ProxyState, ServicePort } from "../src/proxy/types.ts";
import { endpoint, proxyState, servicePort } from "../test/support/iptables-builders.ts";
import { deleteNetnsOnSignals, runner, withBenchNetns } from "./netns.ts";

const settings = upstreamTestSettings("IPv4");

function scaleState(services: number, endpoints: number): ProxyState {
  const entries: Array<[ServicePort, Endpoint[]]> = [];
  for (let i = 0; i < services; i++) {
    const sp = servicePort({
      namespace: `ns${i % 20}`,
      name: `svc${i}`,
      portName: "http",
      clusterIP: `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
      nodePort: i % 2 === 0 ? 30000 + (i % 30000) : 0,
    });
    const eps: Endpoint[] = [];
    for (let j = 0; j < endpoints; j++) {
      const n = i * endpoints + j;
      eps.push(endpoint(`10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, 8080));
    }
    entries.push([sp, eps]);
  }
  return proxyState(entries);
}

const TICK_S = 0.01;
/** CPU seconds of this process's reaped children (utime + stime, /proc/self/stat fields 16–17). */
function childrenCpuS(): number {
  const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[13]) + Number(fields[14])) * TICK_S;
}
const cpuS = (u: NodeJS.CpuUsage): number => (u.user + u.system) / 1e6;
const gc = (): void => (globalThis as { gc?: () => void }).gc?.();

async function main(): Promise<void> {
  const services = Number(process.argv[2] ?? 1000);
  const endpoints = Number(process.argv[3] ?? 10);
  const state = scaleState(services, endpoints);
  const ruleset = renderNftables({ state, settings });
  await withBenchNetns(async (netns) => {
    const kernel = new NetlinkNftablesKernel({ family: "ip", netns });
    try {
      const chunked = planChunkedFullSync(ruleset, null, null, true, {
        resetBaseChains: true,
        servicesPerTransaction: 250,
      });
      for (const t of chunked?.transactions ?? [planFullSync(ruleset, null, { resetBaseChains: true })])
        await kernel.apply(t);
    } finally {
      kernel.close();
    }
    for (let run = 1; run <= 2; run++) {
      gc();
      const heapBefore = process.memoryUsage().heapUsed;
      const cpu0 = process.cpuUsage();
      const wall0 = performance.now();
      const read = await readTableOverNetlink({ family: "ip", netns });
      const readCpu = cpuS(process.cpuUsage(cpu0));
      const heapAfterRead = process.memoryUsage().heapUsed;
      const reading = readTable(ruleset, read.dump, { ifIndex: read.ifIndex });
      const oursCpu = cpuS(process.cpuUsage(cpu0));
      const oursWall = (performance.now() - wall0) / 1000;
      if (!reading.drift.inSync)
        throw new Error(`drift in a freshly written table: ${reading.drift.differences}`);
      const child0 = childrenCpuS();
      const nftWall0 = performance.now();
      const out = await runner.run(["nft", "-j", "list", "table", "ip", "kube-proxy"], {
        netns,
        timeoutMs: 600_000,
      });
      const nftWall = (performance.now() - nftWall0) / 1000;
      const nftCpu = childrenCpuS() - child0;
      const line = [
        `${services}x${endpoints} run ${run}:`,
        `ours read ${readCpu.toFixed(2)} s CPU, read+compare ${oursCpu.toFixed(2)} s CPU (${oursWall.toFixed(2)} s wall),`,
        `heap +${((heapAfterRead - heapBefore) / 2 ** 20).toFixed(0)} MB after the read;`,
        `nft -j list table ${nftCpu.toFixed(2)} s CPU (${nftWall.toFixed(2)} s wall, ${(out.stdout.length / 2 ** 20).toFixed(0)} MB of JSON);`,
        `ratio read+compare/nft ${(oursCpu / nftCpu).toFixed(2)}`,
      ];
      process.stdout.write(line.join(" ") + "\n");
    }
  });
}

deleteNetnsOnSignals(new AbortController());
await main();
