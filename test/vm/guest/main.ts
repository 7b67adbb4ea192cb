/*
 * The one node:test process that runs inside the VM (scripts/vm/init.sh starts it): the shared
 * bench is built by the first test, every scenario module registers its tests on import, and
 * node:test runs them one after another.
 */
import { after, test } from "node:test";
import { exec } from "./lab.ts";
import { buildWorld, disposeWorld } from "./world.ts";

await exec(["sysctl", "-w", "net.ipv4.ip_forward=1"]);

test(
  "the bench: pods and clients in their own namespaces, each with its agent",
  { timeout: 300_000 },
  async (t) => {
    const started = Date.now();
    const lab = await buildWorld();
    t.diagnostic(`${lab.pods.size} pods and ${lab.clients.size} clients ready in ${Date.now() - started} ms`);
  },
);
after(() => disposeWorld());

await import("./scenarios/kernel.ts");
await import("./scenarios/ipvs.ts");
