import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/*
 * A memory-limited cgroup of the test's own: a child of the cgroup this process is in (so the
 * machine's own accounting stays around it), on cgroup v2 when its memory controller is there,
 * else on the v1 memory hierarchy. `dispose` kills what is left in it and removes it.
 */

export interface MemoryCgroup {
  readonly path: string;
  readonly version: 1 | 2;
  /** The file a process writes its pid into to join. */
  readonly procs: string;
  /** Times the kernel's OOM killer ran in it. */
  oomKills(): number;
  dispose(): Promise<void>;
}

function ownPath(controller: string | null): string {
  for (const line of readFileSync("/proc/self/cgroup", "utf8").split("\n")) {
    const [, controllers, path] = line.split(":");
    if (path === undefined) continue;
    if (controller === null ? controllers === "" : controllers?.split(",").includes(controller)) return path;
  }
  throw new Error(`no ${controller ?? "unified"} cgroup in /proc/self/cgroup`);
}

function v2Root(): string | null {
  for (const root of ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]) {
    const controllers = join(root, "cgroup.controllers");
    if (existsSync(controllers) && readFileSync(controllers, "utf8").split(/\s+/).includes("memory"))
      return root;
  }
  return null;
}

export function createMemoryCgroup(limitBytes: number): MemoryCgroup {
  const name = `kpt-mem-${randomBytes(4).toString("hex")}`;
  const root = v2Root();
  let path: string;
  let version: 1 | 2;
  if (root !== null) {
    version = 2;
    const parent = join(root, ownPath(null));
    path = join(parent, name);
    mkdirSync(path);
    writeFileSync(join(path, "memory.max"), String(limitBytes));
    if (existsSync(join(path, "memory.swap.max"))) writeFileSync(join(path, "memory.swap.max"), "0");
  } else {
    version = 1;
    path = join("/sys/fs/cgroup/memory", ownPath("memory"), name);
    mkdirSync(path);
    writeFileSync(join(path, "memory.limit_in_bytes"), String(limitBytes));
    if (existsSync(join(path, "memory.memsw.limit_in_bytes")))
      writeFileSync(join(path, "memory.memsw.limit_in_bytes"), String(limitBytes));
  }
  const procs = join(path, "cgroup.procs");
  return {
    path,
    version,
    procs,
    oomKills() {
      const file = version === 2 ? "memory.events" : "memory.oom_control";
      const match = /oom_kill (\d+)/.exec(readFileSync(join(path, file), "utf8"));
      return match === null ? 0 : Number(match[1]);
    },
    async dispose() {
      for (let attempt = 0; attempt < 50; attempt++) {
        const pids = readFileSync(procs, "utf8").split("\n").filter(Boolean).map(Number);
        for (const pid of pids) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // already gone
          }
        }
        try {
          rmdirSync(path);
          return;
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      throw new Error(`could not remove cgroup ${path}`);
    },
  };
}
