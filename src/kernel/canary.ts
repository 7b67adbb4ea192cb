import { ExecError } from "./exec.ts";
import type { IptablesInterface, Table } from "./iptables.ts";

export const PROXY_CANARY_CHAIN = "KUBE-PROXY-CANARY";

type LogFn = (fields: object, message: string) => void;

/** The subset of a pino logger the monitor uses. */
export interface MonitorLogger {
  readonly info: LogFn;
  readonly error: LogFn;
  readonly debug: LogFn;
}

/** Resolves after `ms`, or early (without rejecting) when `signal` aborts. */
export type Sleep = (ms: number, signal: AbortSignal) => Promise<void>;

export interface CanaryMonitorOptions {
  readonly ipt: IptablesInterface;
  /** Every table gets a canary, and every one is polled. */
  readonly tables: readonly Table[];
  readonly intervalMs: number;
  /** Called after the canary vanished (a firewall reload flushed our rules). */
  readonly onFlush: () => void | Promise<void>;
  readonly canary?: string;
  readonly sleep?: Sleep;
  readonly log?: MonitorLogger;
  readonly signal?: AbortSignal;
  /** How long to wait for the other tables' canaries to vanish too (upstream: 5 s, polled every 100 ms). */
  readonly flushTimeoutMs?: number;
  readonly flushPollMs?: number;
  /** The wait ends early when no further canary vanished for this long (default 500 ms). */
  readonly flushSettleMs?: number;
  readonly now?: () => number;
}

export interface CanaryMonitor {
  /** Stops polling, deletes the canary chains, resolves when the loop has ended. */
  stop(): Promise<void>;
  /** Resolves when the loop has ended (after stop or an aborted signal). */
  readonly done: Promise<void>;
}

const realSleep: Sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });

const noLog: MonitorLogger = { info: () => undefined, error: () => undefined, debug: () => undefined };

/** iptables exit status 4 = "resource problem" (e.g. the xtables lock): says nothing about the canary. */
function isResourceError(err: unknown): boolean {
  return err instanceof ExecError && err.exitCode === 4;
}

/**
 * Upstream `iptables.Monitor`, watching every table instead of the first alone: create a canary
 * chain in every table, poll them all, and when one disappears wait briefly for the others and
 * call `onFlush`. Upstream polls only mangle: a flush of nat alone (`iptables -t nat -F; -X`)
 * is then noticed only by the next sync that happens to fail on the missing chains, which may
 * be an hour away. The wait keeps upstream's purpose (a firewall reload flushes the tables one
 * after another: reload once, after the last) without upstream's price for a flush of some
 * tables only, the whole timeout: it ends once no further canary vanished for `flushSettleMs`.
 */
export function startCanaryMonitor(options: CanaryMonitorOptions): CanaryMonitor {
  const { ipt, tables, intervalMs, onFlush } = options;
  const canary = options.canary ?? PROXY_CANARY_CHAIN;
  const sleep = options.sleep ?? realSleep;
  const log = options.log ?? noLog;
  const flushTimeoutMs = options.flushTimeoutMs ?? 5_000;
  const flushPollMs = options.flushPollMs ?? 100;
  const flushSettleMs = options.flushSettleMs ?? 500;
  const now = options.now ?? Date.now;
  if (tables.length === 0) throw new TypeError("canary monitor needs at least one table");

  const controller = new AbortController();
  const stopSignal = controller.signal;
  const outer = options.signal;
  const onOuterAbort = (): void => controller.abort();
  if (outer !== undefined) {
    if (outer.aborted) controller.abort();
    else outer.addEventListener("abort", onOuterAbort, { once: true });
  }

  async function ensureCanaries(): Promise<boolean> {
    for (const table of tables) {
      try {
        await ipt.ensureChain(table, canary);
      } catch (err) {
        log.error({ err, table, chain: canary }, "Could not set up iptables canary");
        return false;
      }
    }
    return true;
  }

  async function canaryGone(table: Table): Promise<"present" | "gone" | "unknown"> {
    try {
      return (await ipt.chainExists(table, canary)) ? "present" : "gone";
    } catch (err) {
      if (isResourceError(err)) {
        log.error({ err, table, chain: canary }, "Could not check for iptables canary");
        return "unknown";
      }
      return "gone";
    }
  }

  async function goneTables(): Promise<Table[]> {
    const gone: Table[] = [];
    for (const table of tables) if ((await canaryGone(table)) === "gone") gone.push(table);
    return gone;
  }

  /** True once every canary is gone; false when the others stayed (settled or timed out). */
  async function waitForOthersGone(gone: number): Promise<boolean> {
    const deadline = now() + flushTimeoutMs;
    let lastChange = now();
    while (gone < tables.length) {
      if (now() - lastChange >= flushSettleMs || now() >= deadline || stopSignal.aborted) return false;
      await sleep(flushPollMs, stopSignal);
      const count = (await goneTables()).length;
      if (count !== gone) lastChange = now();
      gone = count;
    }
    return true;
  }

  async function loop(): Promise<void> {
    while (!stopSignal.aborted) {
      while (!stopSignal.aborted && !(await ensureCanaries())) await sleep(intervalMs, stopSignal);
      let gone: Table[] = [];
      while (!stopSignal.aborted && gone.length === 0) {
        await sleep(intervalMs, stopSignal);
        if (!stopSignal.aborted) gone = await goneTables();
      }
      if (stopSignal.aborted) break;
      log.debug({ tables: gone, chain: canary }, "IPTables canary deleted");
      if (!(await waitForOthersGone(gone.length))) {
        log.info({ tables: gone }, "Inconsistent iptables state detected");
      }
      log.debug({}, "Reloading after iptables flush");
      try {
        await onFlush();
      } catch (err) {
        log.error({ err }, "Reload after iptables flush failed");
      }
    }
    for (const table of tables) {
      await ipt.deleteChain(table, canary).catch(() => undefined);
    }
    outer?.removeEventListener("abort", onOuterAbort);
  }

  const done = loop();
  return {
    done,
    stop: () => {
      controller.abort();
      return done;
    },
  };
}
