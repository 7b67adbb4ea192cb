import { SandboxError } from "./errors.ts";
import { nodeScriptArgv } from "./scripts.ts";
import type { Sandbox } from "./topology.ts";

export type ProbeProtocol = "tcp" | "udp";
export type ProbeErrorKind = "refused" | "timeout" | "unreachable" | "reset" | "other";

export type ProbeOutcome =
  | { readonly ok: true; readonly pod: string; readonly client: string }
  | { readonly ok: false; readonly error: ProbeErrorKind; readonly detail: string };

export interface ProbeRequest {
  readonly host: string;
  readonly port: number;
  /** Number of requests (each a new connection / new source port), 1..1000; default 1. */
  readonly count?: number;
  /** Per-request bound in milliseconds; default 1000. */
  readonly timeoutMs?: number;
}

export interface ProbeStep extends ProbeRequest {
  readonly protocol: ProbeProtocol;
}

export interface ProbeReport {
  readonly protocol: ProbeProtocol;
  readonly host: string;
  readonly port: number;
  readonly results: readonly ProbeOutcome[];
  /** Answers per pod name. */
  readonly byPod: Readonly<Record<string, number>>;
  /** Source addresses the answering pods saw, per address. */
  readonly byClient: Readonly<Record<string, number>>;
  readonly errors: Readonly<Partial<Record<ProbeErrorKind, number>>>;
}

/** Head-room for Node and tsx to start inside the namespace, on top of the requests' own bound. */
const STARTUP_ALLOWANCE_MS = 20_000;

/** Sends `count` HTTP requests from inside `role`'s namespace (traffic originates there). */
export async function probeHttp(sandbox: Sandbox, role: string, request: ProbeRequest): Promise<ProbeReport> {
  const [report] = await probe(sandbox, role, [{ ...request, protocol: "tcp" }]);
  if (report === undefined) throw new SandboxError("probe returned no report");
  return report;
}

/** Sends `count` UDP datagrams from inside `role`'s namespace, each from a new socket. */
export async function probeUdp(sandbox: Sandbox, role: string, request: ProbeRequest): Promise<ProbeReport> {
  const [report] = await probe(sandbox, role, [{ ...request, protocol: "udp" }]);
  if (report === undefined) throw new SandboxError("probe returned no report");
  return report;
}

/**
 * Runs several probes, in order, from one process inside `role`'s namespace (starting Node
 * is the expensive part); one report per step.
 */
export async function probe(
  sandbox: Sandbox,
  role: string,
  steps: readonly ProbeStep[],
): Promise<ProbeReport[]> {
  const plan = steps.map((step) => ({
    protocol: step.protocol,
    host: step.host,
    port: step.port,
    count: step.count ?? 1,
    timeoutMs: step.timeoutMs ?? 1000,
  }));
  const budgetMs = plan.reduce((sum, step) => sum + step.count * step.timeoutMs, STARTUP_ALLOWANCE_MS);
  const argv = nodeScriptArgv("probe.ts", ["--plan", JSON.stringify(plan)]);
  const { stdout } = await sandbox.exec(role, argv, { timeoutMs: budgetMs });
  const reports = parseReports(stdout);
  if (reports.length !== plan.length) {
    throw new SandboxError(`probe answered ${reports.length} of ${plan.length} steps`);
  }
  return reports.map((report) => summarize(report.protocol, report.host, report.port, report.results));
}

interface RawReport {
  readonly protocol: ProbeProtocol;
  readonly host: string;
  readonly port: number;
  readonly results: readonly ProbeOutcome[];
}

function parseReports(stdout: string): RawReport[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch (cause) {
    throw new SandboxError(`probe printed something that is not JSON: ${stdout.slice(0, 200)}`, { cause });
  }
  const reports = (parsed as { reports?: unknown }).reports;
  if (!Array.isArray(reports)) throw new SandboxError("probe output has no reports array");
  return reports as RawReport[];
}

/** Tallies a run's outcomes by answering pod, seen client address and error kind. */
export function summarize(
  protocol: ProbeProtocol,
  host: string,
  port: number,
  results: readonly ProbeOutcome[],
): ProbeReport {
  const byPod: Record<string, number> = {};
  const byClient: Record<string, number> = {};
  const errors: Partial<Record<ProbeErrorKind, number>> = {};
  for (const outcome of results) {
    if (outcome.ok) {
      byPod[outcome.pod] = (byPod[outcome.pod] ?? 0) + 1;
      byClient[outcome.client] = (byClient[outcome.client] ?? 0) + 1;
    } else {
      errors[outcome.error] = (errors[outcome.error] ?? 0) + 1;
    }
  }
  return { protocol, host, port, results, byPod, byClient, errors };
}
