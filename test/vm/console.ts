/*
 * The VM's serial console, read by the host: the guest's init and reporter (test/vm/guest/) write
 * `KPT-VM <kind> …` lines between whatever the kernel prints. Pure: text in, results out.
 */

export type GuestStatus = "pass" | "fail" | "skip" | "todo";

export interface GuestResult {
  /** Names from the top-level scenario down to this test. */
  readonly path: readonly string[];
  readonly status: GuestStatus;
  readonly ms: number;
  readonly reason?: string;
  readonly error?: string;
}

export interface GuestDiagnostic {
  readonly path?: readonly string[];
  readonly message: string;
}

/** Milestones of one boot: uptimes in seconds as the guest saw them. */
export interface ConsoleState {
  readonly bootedAt?: number;
  readonly modulesLoadedAt?: number;
  readonly modulesFailed: readonly string[];
  /** The test the guest runner started last and has not finished (what a hang was doing). */
  readonly running?: readonly string[];
  readonly results: readonly GuestResult[];
  /** Diagnostics, each with the test that was running when it came (none: the runner's summary). */
  readonly diagnostics: readonly GuestDiagnostic[];
  /** The end marker: the runner's exit code and the uptime at its exit. */
  readonly done?: { readonly rc: number; readonly uptime: number };
  /** Marker lines that did not parse (a truncated line, or a protocol mismatch). */
  readonly garbled: readonly string[];
}

export const EMPTY_CONSOLE: ConsoleState = { modulesFailed: [], results: [], diagnostics: [], garbled: [] };

const STATUSES: readonly GuestStatus[] = ["pass", "fail", "skip", "todo"];

function uptimeOf(rest: string): number | undefined {
  const m = /uptime=([0-9.]+)/.exec(rest);
  return m === null ? undefined : Number(m[1]);
}

function parseResult(json: unknown): GuestResult | undefined {
  if (typeof json !== "object" || json === null) return undefined;
  const o = json as Record<string, unknown>;
  const path = o.path;
  if (!Array.isArray(path) || path.length === 0 || !path.every((p) => typeof p === "string"))
    return undefined;
  if (!STATUSES.includes(o.status as GuestStatus) || typeof o.ms !== "number") return undefined;
  return {
    path: path as string[],
    status: o.status as GuestStatus,
    ms: o.ms,
    ...(typeof o.reason === "string" ? { reason: o.reason } : {}),
    ...(typeof o.error === "string" ? { error: o.error } : {}),
  };
}

/** Folds one console line into the state; lines without the marker are left to the caller. */
export function consumeLine(state: ConsoleState, rawLine: string): ConsoleState {
  const line = rawLine.replace(/\r$/, "");
  const at = line.indexOf("KPT-VM ");
  if (at < 0) return state;
  const body = line.slice(at + "KPT-VM ".length);
  const space = body.indexOf(" ");
  const kind = space < 0 ? body : body.slice(0, space);
  const rest = space < 0 ? "" : body.slice(space + 1);
  const garbled = { ...state, garbled: [...state.garbled, line] };
  switch (kind) {
    case "booted": {
      const uptime = uptimeOf(rest);
      return uptime === undefined ? garbled : { ...state, bootedAt: uptime };
    }
    case "modules-loaded": {
      const uptime = uptimeOf(rest);
      return uptime === undefined ? garbled : { ...state, modulesLoadedAt: uptime };
    }
    case "modules-failed":
      return { ...state, modulesFailed: rest.split(" ").filter((m) => m !== "") };
    case "done": {
      const rc = /rc=(\d+)/.exec(rest);
      const uptime = uptimeOf(rest);
      if (rc === null || uptime === undefined) return garbled;
      return { ...state, done: { rc: Number(rc[1]), uptime } };
    }
    case "start":
    case "test":
    case "diag": {
      let json: unknown;
      try {
        json = JSON.parse(rest);
      } catch {
        return garbled;
      }
      if (kind === "diag") {
        const message = (json as { message?: unknown } | null)?.message;
        if (typeof message !== "string") return garbled;
        const diagnostic = state.running === undefined ? { message } : { path: state.running, message };
        return { ...state, diagnostics: [...state.diagnostics, diagnostic] };
      }
      if (kind === "start") {
        const path = (json as { path?: unknown } | null)?.path;
        return Array.isArray(path) && path.every((p) => typeof p === "string")
          ? { ...state, running: path as string[] }
          : garbled;
      }
      const result = parseResult(json);
      if (result === undefined) return garbled;
      // The test that finished is no longer running; its parent, if any, still is.
      const { running: _finished, ...others } = state;
      const parent = result.path.slice(0, -1);
      return {
        ...others,
        ...(parent.length > 0 ? { running: parent } : {}),
        results: [...state.results, result],
      };
    }
    default:
      return garbled;
  }
}

export interface ResultTree {
  readonly result: GuestResult;
  readonly children: readonly ResultTree[];
}

/**
 * The results as a tree of top-level scenarios. node:test reports a subtest before its parent,
 * so children are collected by path prefix; a subtest whose parent never finished (the run was
 * cut short) becomes a root of its own.
 */
export function resultTree(results: readonly GuestResult[]): ResultTree[] {
  const key = (path: readonly string[]): string => JSON.stringify(path);
  const children = new Map<string, GuestResult[]>();
  const known = new Set(results.map((r) => key(r.path)));
  const roots: GuestResult[] = [];
  for (const r of results) {
    const parent = key(r.path.slice(0, -1));
    if (r.path.length > 1 && known.has(parent)) {
      children.set(parent, [...(children.get(parent) ?? []), r]);
    } else {
      roots.push(r);
    }
  }
  const build = (r: GuestResult): ResultTree => ({
    result: r,
    children: (children.get(key(r.path)) ?? []).map(build),
  });
  return roots.map(build);
}

/** Why a boot did not deliver its results, or undefined when it did. */
export function bootFailure(
  state: ConsoleState,
  exit: { code: number | null; signal: string | null; timedOut: boolean },
): string | undefined {
  if (state.done !== undefined) return undefined;
  const how = exit.timedOut
    ? "was stopped at its time limit"
    : `exited (code ${exit.code}, signal ${exit.signal})`;
  if (state.bootedAt === undefined) return `the VM ${how} before its init ran (no "KPT-VM booted" line)`;
  if (state.modulesLoadedAt === undefined) return `the VM ${how} while loading kernel modules`;
  const running = state.running === undefined ? "" : ` during "${state.running.join(" › ")}"`;
  return `the VM ${how} before the test runner finished${running} (no "KPT-VM done" line)`;
}

/**
 * A diagnostic that carries a file the guest recorded for the fixtures: `record NAME` on its first
 * line, the file's text after it. NAME is a plain file name (no directory).
 */
export function recordOf(message: string): { name: string; text: string } | undefined {
  const m = /^record ([A-Za-z0-9][\w.-]*)\n([\s\S]*)$/.exec(message);
  return m === null ? undefined : { name: m[1]!, text: m[2]! };
}
