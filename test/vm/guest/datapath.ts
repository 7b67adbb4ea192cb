/*
 * The scale lab's ipvs series (bench/lab/vm.ts boots the VM with KPT_VM_MAIN=datapath): the same
 * measurement as the lab's namespace modes (bench/lab.ts), inside the guest, whose kernel has IPVS.
 * For each size, the compiled daemon in ipvs mode serves a manifests folder of N synthetic Services
 * plus the target (bench/lab/manifests.ts); a client pod opens new TCP connections and sends first
 * UDP packets to the target's ClusterIP with the lab's own agent (bench/lab/agent.ts), through the
 * node, to a server pod running the same agent. One `KPT-LAB {json}` diagnostic per size carries
 * the agent's output lines; the host turns them into the lab's rows.
 *
 * Parameters arrive as environment variables from the kernel command line: KPT_LAB_SIZES (comma
 * separated), KPT_LAB_ENDPOINTS, KPT_LAB_CONNECTIONS, KPT_LAB_RATE, KPT_LAB_CAP_S (per size).
 */
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Daemon, Lab, cleanup, exec, sleep } from "./lab.ts";

const BENCH = fileURLToPath(new URL("../bench-lab/bench/lab/", import.meta.url));
const number = (name: string, fallback: number): number => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name}: not a positive number`);
  return v;
};
const SIZES = (process.env.KPT_LAB_SIZES ?? "100").split(",").map(Number);
const ENDPOINTS = number("KPT_LAB_ENDPOINTS", 1);
const CONNECTIONS = number("KPT_LAB_CONNECTIONS", 300);
const RATE = number("KPT_LAB_RATE", 500);
const CAP_MS = number("KPT_LAB_CAP_S", 900) * 1000;

interface Addresses {
  readonly targetIP: string;
  readonly targetPort: number;
  readonly serverIP: string;
  readonly serverPort: number;
  readonly clientIP: string;
}

await exec(["sysctl", "-w", "net.ipv4.ip_forward=1"]);
const lab = new Lab();
const servers: { kill: () => void }[] = [];
after(async () => {
  for (const s of servers) s.kill();
  await lab.dispose();
});

const agentArgv = (args: readonly string[]) => [process.execPath, `${BENCH}agent.js`, ...args];

/** The lab's agent in the client pod; its last output line (percentiles) or the failure. */
async function probe(addresses: Addresses, kind: "tcp" | "udp", count: number): Promise<string> {
  const argv = agentArgv([
    kind,
    "--host",
    addresses.targetIP,
    "--port",
    String(addresses.targetPort),
    "--count",
    String(count),
    "--rate",
    String(RATE),
  ]);
  // Each connection may wait out the agent's 1 s timeout; under emulation on a busy host they do.
  const timeoutMs = 120_000 + count * 1500;
  const { stdout } = await exec(["ip", "netns", "exec", lab.pod("lab-client").netns, ...argv], { timeoutMs });
  return stdout.trim().split("\n").pop() ?? "";
}

/** VmHWM of the daemon (found by its command line), MB. */
function daemonHwmMB(): number | null {
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    } catch {
      continue; // the process exited while /proc was listed
    }
    if (!cmdline.includes("kube-proxy-ts.js") || !cmdline.includes("ipvs")) continue;
    const kb = /^VmHWM:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb === undefined ? null : Math.round(Number(kb) / 1024);
  }
  return null;
}

let addresses: Addresses | undefined;

test("the lab's pods: a client and a server running the lab's agent", { timeout: 300_000 }, async () => {
  const plan = (await exec([process.execPath, `${BENCH}manifests.js`])).stdout;
  const a = JSON.parse(plan) as Addresses;
  await lab.addPod("lab-server", a.serverIP);
  await lab.addPod("lab-client", a.clientIP);
  const server = spawn(
    "ip",
    ["netns", "exec", lab.pod("lab-server").netns, ...agentArgv(["serve", "--port", String(a.serverPort)])],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  servers.push({ kill: () => server.kill("SIGKILL") });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the server agent did not start in 120 s")), 120_000);
    server.stdout.on("data", (d: Buffer) => {
      if (d.toString().includes('"ready":true')) {
        clearTimeout(timer);
        resolve();
      }
    });
    server.on("close", (code) => reject(new Error(`the server agent exited (${code})`)));
  });
  addresses = a;
});

for (const services of SIZES) {
  test(`ipvs mode at ${services} Services x ${ENDPOINTS}`, { timeout: CAP_MS + 900_000 }, async (t) => {
    if (addresses === undefined) throw new Error("no pods");
    const daemon = new Daemon("ipvs");
    try {
      await exec(
        [process.execPath, `${BENCH}manifests.js`, daemon.dir, String(services), String(ENDPOINTS)],
        {
          timeoutMs: 600_000,
        },
      );
      const started = Date.now();
      await daemon.start(CAP_MS);
      let programmedMs: number | null = null;
      while (Date.now() - started < CAP_MS) {
        const one = JSON.parse(await probe(addresses, "tcp", 1)) as { count: number };
        if (one.count === 1) {
          programmedMs = Date.now() - started;
          break;
        }
        await sleep(250);
      }
      const row = { services, endpointsPerService: ENDPOINTS, programmedMs };
      let measured: { tcp: string | null; udp: string | null; note: string } = {
        tcp: null,
        udp: null,
        note: "not programmed within the cap",
      };
      if (programmedMs !== null) {
        try {
          const tcp = await probe(addresses, "tcp", CONNECTIONS);
          measured = { tcp, udp: await probe(addresses, "udp", CONNECTIONS), note: "" };
        } catch (error) {
          measured = { tcp: null, udp: null, note: (error as Error).message.split("\n")[0]!.slice(0, 200) };
        }
      }
      t.diagnostic(`KPT-LAB ${JSON.stringify({ ...row, ...measured, daemonHwmMB: daemonHwmMB() })}`);
    } finally {
      await daemon.dispose();
      await cleanup("ipvs");
    }
  });
}
