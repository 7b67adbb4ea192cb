import { writeFile } from "node:fs/promises";

/** Upstream `oom.ApplyOOMScoreAdj(0, value)`: this process's OOM-killer adjustment. */
export async function applyOomScoreAdj(value: number, path = "/proc/self/oom_score_adj"): Promise<void> {
  await writeFile(path, `${value}\n`);
}
