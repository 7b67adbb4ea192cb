/**
 * Throwaway network namespaces and temporary folders for the benchmarks. Every one made here is
 * remembered until it is deleted, so that an interrupted run (Ctrl-C, SIGTERM) still removes all.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Runner } from "../src/kernel/exec.ts";
import { ProcessRunner } from "../src/kernel/exec.ts";

export const runner: Runner = new ProcessRunner();

const live = new Set<string>();
/** `ip netns add` calls in flight: cleanup waits for them, or a namespace could appear after it. */
const creating = new Set<Promise<unknown>>();
/** Set once cleanup started: no namespace may be created after that. */
let closed = false;

async function deleteNetns(name: string): Promise<void> {
  await runner.run(["ip", "netns", "delete", name], { timeoutMs: 30_000 });
  live.delete(name);
}

/** Runs `body` in a fresh namespace `kpt-bench-<random>` (loopback up), deleted afterwards. */
export async function withBenchNetns<T>(body: (netns: string) => Promise<T>): Promise<T> {
  if (closed) throw new Error("benchmark interrupted: no new network namespace");
  const name = `kpt-bench-${randomBytes(4).toString("hex")}`;
  live.add(name);
  const adding = runner.run(["ip", "netns", "add", name], { timeoutMs: 10_000 });
  creating.add(adding);
  try {
    await adding;
  } catch (err) {
    live.delete(name);
    throw err;
  } finally {
    creating.delete(adding);
  }
  try {
    await runner.run(["ip", "link", "set", "lo", "up"], { netns: name, timeoutMs: 10_000 });
    return await body(name);
  } finally {
    await deleteNetns(name);
  }
}

const liveDirs = new Set<string>();

/** A fresh folder `$TMPDIR/<prefix>XXXXXX`, removed by removeBenchTempDir or on a signal. */
export function benchTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  liveDirs.add(dir);
  return dir;
}

export function removeBenchTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  liveDirs.delete(dir);
}

/** Deletes every namespace this process still holds; failures are reported, not thrown. */
export async function deleteLiveNetns(): Promise<void> {
  closed = true;
  await Promise.allSettled([...creating]);
  for (const name of [...live]) {
    try {
      await deleteNetns(name);
    } catch (err) {
      console.error(`could not delete network namespace ${name}: ${(err as Error).message}`);
    }
  }
}

/**
 * On SIGINT/SIGTERM: abort work in flight, delete the namespaces, then exit with the signal's
 * conventional status. A second signal while cleaning up is ignored so cleanup can finish.
 */
export function deleteNetnsOnSignals(abort: AbortController): void {
  let cleaning = false;
  const onSignal = (signal: NodeJS.Signals, status: number) => {
    if (cleaning) return;
    cleaning = true;
    console.error(`\n${signal}: deleting ${live.size} benchmark namespace(s)…`);
    abort.abort();
    for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
    void deleteLiveNetns().finally(() => process.exit(status));
  };
  process.on("SIGINT", () => onSignal("SIGINT", 130));
  process.on("SIGTERM", () => onSignal("SIGTERM", 143));
}
