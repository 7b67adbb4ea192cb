import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { ProcessRunner } from "../../../src/kernel/exec.ts";
import { spawnBackground } from "../../../src/kernel/spawn.ts";
import { probe } from "../../../src/sandbox/client.ts";
import { SandboxError } from "../../../src/sandbox/errors.ts";
import { startPodServer } from "../../../src/sandbox/servers.ts";
import { Sandbox } from "../../../src/sandbox/topology.ts";

const PREFIX = "kptsbxlife";
const runner = new ProcessRunner();
const topologyModule = new URL("../../../src/sandbox/topology.ts", import.meta.url).href;

async function namespacesOf(prefix: string): Promise<string[]> {
  const { stdout } = await runner.run(["ip", "netns", "list"]);
  return stdout
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => name.startsWith(`${prefix}-`))
    .sort();
}

/** Runs `body` (an ES module snippet with `Sandbox` in scope) in a separate Node process. */
function child(body: string) {
  const code = `import { Sandbox } from ${JSON.stringify(topologyModule)};\n${body}`;
  return spawnBackground([
    process.execPath,
    "--import",
    import.meta.resolve("tsx"),
    "--input-type=module",
    "-e",
    code,
  ]);
}

async function exited(process_: ReturnType<typeof child>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (process_.running && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(process_.running, false, `child still running; stderr: ${process_.stderr}`);
}

/** True once `pid` has exited (gone, or a zombie awaiting its reaper), polling up to `timeoutMs`. */
async function gone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let state: string | undefined;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    } catch {
      return true;
    }
    if (state === "Z" || state === "X") return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("sandbox lifecycle", () => {
  it("removes everything when the code using it throws", async () => {
    const prefix = `${PREFIX}a`;
    const before = await namespacesOf(prefix);
    let made: string[] = [];
    const failing = async (): Promise<void> => {
      await using sandbox = await Sandbox.create({ prefix });
      await sandbox.addNode("node-1", { ipv4: "192.168.50.1" });
      await sandbox.addPod("node-1", "pod-a", { ipv4: "10.244.0.5" });
      await startPodServer(sandbox, "pod-a", { httpPort: 8080, udpPort: null });
      made = sandbox.netnsNames;
      throw new Error("test body failed");
    };
    await assert.rejects(failing(), /test body failed/);
    assert.equal(made.length, 3);
    assert.deepEqual(await namespacesOf(prefix), before);
  });

  it("disposes idempotently and refuses to grow afterwards", async () => {
    const sandbox = await Sandbox.create({ prefix: `${PREFIX}b` });
    await sandbox.addNode("node-1", { ipv4: "192.168.50.1" });
    await Promise.all([sandbox.dispose(), sandbox.dispose()]);
    await sandbox.dispose();
    assert.deepEqual(await namespacesOf(`${PREFIX}b-${sandbox.id}`), []);
    assert.equal(existsSync(`/run/kpt-sandbox/${PREFIX}b-${sandbox.id}.json`), false);
    await assert.rejects(sandbox.addNode("node-2", { ipv4: "192.168.50.2" }), SandboxError);
  });

  it("rejects bad names and addresses before touching the kernel", async () => {
    await using sandbox = await Sandbox.create({ prefix: `${PREFIX}c` });
    await assert.rejects(sandbox.addNode("Node_1", { ipv4: "192.168.50.1" }), SandboxError);
    await assert.rejects(sandbox.addNode("lan", { ipv4: "192.168.50.1" }), SandboxError);
    await assert.rejects(sandbox.addNode("node-1", { ipv4: "fd00::1" }), SandboxError);
    await assert.rejects(
      sandbox.addExternal("client", { ipv4: "192.168.50.2", routes: ["10.1.0.0/16"] }),
      /need a gateway/,
    );
    assert.deepEqual(sandbox.netnsNames, []);
    await sandbox.addNode("node-1", { ipv4: "192.168.50.1" });
    await assert.rejects(sandbox.addPod("node-1", "pod-a", { ipv4: "10.245.0.5" }), /outside/);
    await assert.rejects(
      sandbox.addPod("node-1", "pod-a", { ipv4: "10.244.0.5", ipv6: "fd00::5" }),
      /IPv4-only/,
    );
    await assert.rejects(sandbox.addPod("node-9", "pod-a", { ipv4: "10.244.0.5" }), /no namespace "node-9"/);
    await assert.rejects(
      sandbox.addExternal("client", {
        ipv4: "192.168.50.2",
        gateway: "node-1",
        routes: ["fd00:10:96::/112"],
      }),
      /IPv6 gateway/,
    );
    assert.equal(sandbox.netnsNames.length, 2, "only the LAN and node-1 exist");
  });

  it("builds a dual-stack two-node cluster with pod routes between the nodes", async () => {
    await using sandbox = await Sandbox.create({ prefix: `${PREFIX}d` });
    await sandbox.addNode("node-1", { ipv4: "192.168.50.1", ipv6: "fd00:50::1" });
    await sandbox.addNode("node-2", { ipv4: "192.168.50.3", ipv6: "fd00:50::3" });
    const a = await sandbox.addPod("node-1", "pod-a", { ipv4: "10.244.0.5", ipv6: "fd00:10:244::5" });
    const b = await sandbox.addPod("node-2", "pod-b", { ipv4: "10.244.1.7", ipv6: "fd00:10:244:1::7" });
    assert.equal(sandbox.node("node-2").podCIDR, "10.244.1.0/24");
    await startPodServer(sandbox, "pod-b", { httpPort: 8080, udpPort: null });
    const [v4, v6] = await probe(sandbox, "pod-a", [
      { protocol: "tcp", host: b.ipv4, port: 8080 },
      { protocol: "tcp", host: b.ipv6 ?? "", port: 8080 },
    ]);
    assert.ok(v4 !== undefined && v6 !== undefined);
    assert.deepEqual(v4.byClient, { [a.ipv4]: 1 }, JSON.stringify(v4.results));
    assert.deepEqual(v6.byClient, { [a.ipv6 ?? ""]: 1 }, JSON.stringify(v6.results));
    assert.deepEqual(v6.byPod, { "pod-b": 1 });
  });

  it("cleans up when the owning process gets SIGTERM", async () => {
    const prefix = `${PREFIX}e`;
    const owner = child(`
      const sandbox = await Sandbox.create({ prefix: ${JSON.stringify(prefix)} });
      await sandbox.addNode("node-1", { ipv4: "192.168.50.1" });
      console.log("ready");
      setInterval(() => undefined, 1000);
    `);
    await owner.waitForLine(/^ready$/, 15_000);
    assert.equal((await namespacesOf(prefix)).length, 2);
    await owner.stop(10_000);
    assert.deepEqual(await namespacesOf(prefix), []);
  });

  it("cleans up on process exit when the owner forgot to dispose", async () => {
    const prefix = `${PREFIX}f`;
    const owner = child(`
      const sandbox = await Sandbox.create({ prefix: ${JSON.stringify(prefix)} });
      await sandbox.addNode("node-1", { ipv4: "192.168.50.1" });
      process.exit(0);
    `);
    await exited(owner, 15_000);
    assert.deepEqual(await namespacesOf(prefix), []);
  });

  it("sweeps the namespaces of a crashed run, and only those", async () => {
    const prefix = `${PREFIX}g`;
    const crashed = child(`
      const sandbox = await Sandbox.create({ prefix: ${JSON.stringify(prefix)} });
      await sandbox.addNode("node-1", { ipv4: "192.168.50.1" });
      console.log("ready");
      setInterval(() => undefined, 1000);
    `);
    await crashed.waitForLine(/^ready$/, 15_000);
    await using live = await Sandbox.create({ prefix });
    await live.addNode("node-1", { ipv4: "192.168.50.1" });
    if (crashed.pid !== undefined) process.kill(crashed.pid, "SIGKILL");
    await exited(crashed, 5_000);
    const leftovers = (await namespacesOf(prefix)).filter((name) => !live.netnsNames.includes(name));
    assert.equal(leftovers.length, 2, "SIGKILL leaves the namespaces behind");
    assert.deepEqual((await Sandbox.sweep(prefix)).sort(), leftovers);
    assert.deepEqual(await namespacesOf(prefix), [...live.netnsNames].sort());
  });

  it("leaves a released sandbox running after its owner exits, for a later sweep", async () => {
    const prefix = `${PREFIX}h`;
    const owner = child(`
      const sandbox = await Sandbox.create({ prefix: ${JSON.stringify(prefix)} });
      await sandbox.addNode("node-1", { ipv4: "192.168.50.1" });
      sandbox.spawn("node-1", ["sleep", "30"]);
      sandbox.release();
    `);
    await exited(owner, 15_000);
    const left = await namespacesOf(prefix);
    assert.equal(left.length, 2, owner.stderr);
    const node = left.find((name) => name.endsWith("-node-1")) ?? "";
    const { stdout } = await runner.run(["ip", "netns", "pids", node]);
    const pids = stdout.trim().split("\n");
    assert.equal(pids.length, 1, "the sleep still runs in the node namespace");
    assert.deepEqual((await Sandbox.sweep(prefix)).sort(), left);
    assert.deepEqual(await namespacesOf(prefix), []);
    assert.ok(await gone(Number(pids[0]), 3_000), "sweep killed the sleep");
  });
});
