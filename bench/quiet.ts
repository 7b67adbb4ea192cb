/**
 * Waits for the machine to be quiet before a timed phase. Deleting a network namespace that held
 * 10,000 Services' rules returns at once, but the kernel frees them afterwards for seconds, on
 * the same two CPUs the next measurement needs; other processes do the same. Reads /proc/stat
 * only.
 */
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

/** Aggregate CPU jiffies: [idle (idle + iowait), total]. */
function cpuTimes(): [number, number] {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  return [idle, fields.reduce((a, b) => a + b, 0)];
}

export interface Settled {
  readonly waitedMs: number;
  /** Idle share of all CPUs in the last window (1 = idle). */
  readonly idle: number;
}

/**
 * Returns once two consecutive 250 ms windows had at least `minIdle` of all CPUs idle, or after
 * `maxMs` (then with the last window's idle share, so a caller can report a busy machine).
 */
export async function settle(minIdle = 0.85, maxMs = 30_000): Promise<Settled> {
  const started = performance.now();
  let quietWindows = 0;
  let idle = 0;
  let [idleBefore, totalBefore] = cpuTimes();
  while (performance.now() - started < maxMs) {
    await sleep(250);
    const [idleNow, totalNow] = cpuTimes();
    idle = totalNow > totalBefore ? (idleNow - idleBefore) / (totalNow - totalBefore) : 1;
    [idleBefore, totalBefore] = [idleNow, totalNow];
    quietWindows = idle >= minIdle ? quietWindows + 1 : 0;
    if (quietWindows >= 2) break;
  }
  return { waitedMs: performance.now() - started, idle };
}
