import { randomBytes } from "node:crypto";
import { ProcessRunner } from "../../src/kernel/exec.ts";

export const runner = new ProcessRunner();

/** Runs `body` with a fresh network namespace `kpt-k-<random>` that is always deleted afterwards. */
export async function withNetns<T>(body: (netns: string) => Promise<T>): Promise<T> {
  const netns = `kpt-k-${randomBytes(4).toString("hex")}`;
  await runner.run(["ip", "netns", "add", netns], { timeoutMs: 10_000 });
  try {
    await runner.run(["ip", "link", "set", "lo", "up"], { netns, timeoutMs: 10_000 });
    return await body(netns);
  } finally {
    await runner.run(["ip", "netns", "delete", netns], { timeoutMs: 10_000 });
  }
}

/** iptables-save output without the timestamped comment lines. */
export function stripComments(dump: string): string {
  return dump
    .split("\n")
    .filter((l) => !l.startsWith("#"))
    .join("\n");
}
