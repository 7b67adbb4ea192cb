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
export function probeHttp(sandbox: Sandbox, role: string, request: ProbeRequest): Promise<ProbeReport> {
  return probe(sandbox, role, "tcp", request);
}

/** Sends `count` UDP datagrams from inside `role`'s namespace, each from a new socket. */
export function probeUdp(sandbox: Sandbox, role: string, request: ProbeRequest): Promise<ProbeReport> {
  return probe(sandbox, role, "udp", request);
}

async function probe(
  sandbox: Sandbox,
  role: string,
  protocol: ProbeProtocol,
  request: ProbeRequest,
): Promise<ProbeReport> {
  const count = request.count ?? 1;
  const timeoutMs = request.timeoutMs ?? 1000;
  const argv = nodeScriptArgv("probe.ts", [
    "--protocol",
    protocol,
    "--host",
    request.host,
    "--port",
    String(request.port),
    "--count",
    String(count),
    "--timeout-ms",
    String(timeoutMs),
  ]);
  const { stdout } = await sandbox.exec(role, argv, { timeoutMs: count * timeoutMs + STARTUP_ALLOWANCE_MS });
  return summarize(protocol, request.host, request.port, parseResults(stdout));
}

function parseResults(stdout: string): ProbeOutcome[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch (cause) {
    throw new SandboxError(`probe printed something that is not JSON: ${stdout.slice(0, 200)}`, { cause });
  }
  const results = (parsed as { results?: unknown }).results;
  if (!Array.isArray(results)) throw new SandboxError("probe output has no results array");
  return results as ProbeOutcome[];
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
