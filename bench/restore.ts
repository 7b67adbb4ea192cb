/**
 * The kernel tools' own cost, measured the way the proxier calls them (`ip netns exec NS
 * iptables-X-restore …`, payload on stdin), with a time cap: iptables-nft-restore of one large
 * payload can run for many minutes, and a capped run is reported as "> cap", never as a time.
 */
import { ExecError } from "../src/kernel/exec.ts";
import { iptablesBinaries, type RestorePayload } from "../src/kernel/iptables.ts";
import { runner } from "./netns.ts";

export type Backend = "nft" | "legacy";

export type Timing =
  | { readonly status: "ok"; readonly ms: number }
  | { readonly status: "capped"; readonly capMs: number }
  | { readonly status: "failed"; readonly ms: number; readonly error: string };

export interface RestoreCall {
  readonly backend: Backend;
  readonly netns: string;
  readonly payload: RestorePayload;
  /** `--test`: parse and build the ruleset without committing it. */
  readonly test?: boolean;
  readonly capMs: number;
  readonly signal?: AbortSignal;
}

/** The lock-wait flags the proxier passes to iptables-restore 1.8.x (upstream `getIPTablesRestoreWaitFlag`). */
const RESTORE_WAIT_FLAGS = ["-w", "5", "-W", "100000"];

/** One `iptables-<backend>-restore -w 5 -W 100000 --noflush --counters [--test]`, as the proxier runs it. */
export async function timeRestore(call: RestoreCall): Promise<Timing> {
  const argv = [
    iptablesBinaries("IPv4", call.backend).restore,
    ...RESTORE_WAIT_FLAGS,
    "--noflush",
    "--counters",
  ];
  if (call.test === true) argv.push("--test");
  const started = performance.now();
  try {
    await runner.run(argv, {
      stdin: call.payload,
      netns: call.netns,
      timeoutMs: call.capMs,
      ...(call.signal === undefined ? {} : { signal: call.signal }),
    });
    return { status: "ok", ms: performance.now() - started };
  } catch (err) {
    if (err instanceof ExecError && err.reason === "timeout") return { status: "capped", capMs: call.capMs };
    if (err instanceof ExecError && err.reason !== "aborted") {
      return { status: "failed", ms: performance.now() - started, error: err.message.slice(0, 500) };
    }
    throw err;
  }
}

/** Sequential restores of several payloads; stops at the first one that does not succeed. */
export async function timeRestores(
  calls: readonly RestoreCall[],
): Promise<{ total: Timing; each: readonly number[] }> {
  let total = 0;
  const each: number[] = [];
  for (const call of calls) {
    const t = await timeRestore(call);
    if (t.status !== "ok") return { total: t, each };
    total += t.ms;
    each.push(t.ms);
  }
  return { total: { status: "ok", ms: total }, each };
}

export function formatTiming(t: Timing): string {
  switch (t.status) {
    case "ok":
      return formatMs(t.ms);
    case "capped":
      return `> ${formatMs(t.capMs)} (capped)`;
    case "failed":
      return `failed after ${formatMs(t.ms)}`;
  }
}

export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`;
}

/** `ours / tool`, or a bound when the tool was capped, or "n/a". */
export function formatRatio(oursMs: number, tool: Timing): string {
  if (tool.status === "ok") return `${(oursMs / tool.ms).toFixed(3)}×`;
  if (tool.status === "capped") return `< ${(oursMs / tool.capMs).toFixed(3)}×`;
  return "n/a";
}
