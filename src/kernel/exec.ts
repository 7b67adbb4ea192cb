import { spawn } from "node:child_process";
import type { Writable } from "node:stream";
import { KubeProxyError } from "../errors.ts";

export interface ExecOptions {
  /** Written to the child's stdin (then closed): text, or the pieces of a text in order. */
  readonly stdin?: string | readonly string[];
  /** Kill the child after this many milliseconds (default 60 s). */
  readonly timeoutMs?: number;
  /** Run inside this network namespace (`ip netns exec NAME …`). */
  readonly netns?: string;
  readonly signal?: AbortSignal;
  /** Exit codes that are not failures (default: only 0). */
  readonly okExitCodes?: readonly number[];
  /** Variables added to the inherited environment (secrets go here, never into argv). */
  readonly env?: Readonly<Record<string, string>>;
}

export interface ExecResult {
  readonly argv: readonly string[];
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly durationMs: number;
}

/** A process that could not be started, timed out, or exited with a failing status. */
export class ExecError extends KubeProxyError {
  readonly code = "KPT_EXEC";

  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    readonly reason: "exit" | "timeout" | "spawn" | "aborted",
    options?: { cause?: unknown },
  ) {
    const what =
      reason === "exit"
        ? `exited with status ${exitCode}`
        : reason === "timeout"
          ? "timed out"
          : reason === "aborted"
            ? "was aborted"
            : "could not be started";
    const detail = stderr.trim() === "" ? "" : `: ${stderr.trim()}`;
    super(`${argv.join(" ")} ${what}${detail}`, options);
  }
}

/** Pieces are written in groups of about this many characters. */
const WRITE_GROUP = 65_536;

/**
 * Writes a text given as pieces (a sync's per-Service blocks) in groups of ~64K characters, each
 * once the pipe has taken the previous one, instead of joining them into one string first. The
 * joined string and the buffer Node encodes it into are fresh memory the size of the payload,
 * and fresh pages are expensive on VMs (~22 µs each measured here, bench/README.md run 9): for a
 * 25 MB payload, join and write took 400-500 ms and 13,500 page faults, grouped writes 210-240 ms.
 */
async function writePieces(stdin: Writable, pieces: readonly string[]): Promise<void> {
  const drained = (): Promise<void> =>
    new Promise((resolve) => {
      const done = (): void => {
        stdin.off("drain", done);
        stdin.off("close", done);
        resolve();
      };
      stdin.on("drain", done);
      stdin.on("close", done);
    });
  let group = "";
  for (let i = 0; i < pieces.length; i++) {
    group += pieces[i];
    if (group.length < WRITE_GROUP && i < pieces.length - 1) continue;
    // A child that exited early closed its stdin: its exit status tells the story.
    if (stdin.destroyed) return;
    const more = stdin.write(group);
    group = "";
    if (!more) await drained();
  }
  if (!stdin.destroyed) stdin.end();
}

/** Something that runs commands; the seam every kernel wrapper takes, so tests can fake it. */
export interface Runner {
  run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult>;
}

const DEFAULT_TIMEOUT_MS = 60_000;

/** Runs an argv array (never a shell string) with a timeout, payload on stdin. */
/**
 * One tool's calls through `runner`: a fixed timeout, stdin when given, inside `netns` when set
 * (what every small kernel wrapper repeats: ipvsadm, ipset).
 */
export function toolRunner(
  runner: Runner,
  netns?: string,
  timeoutMs = DEFAULT_TIMEOUT_MS,
): (argv: readonly string[], stdin?: string) => Promise<ExecResult> {
  return (argv, stdin) =>
    runner.run(argv, {
      timeoutMs,
      ...(stdin === undefined ? {} : { stdin }),
      ...(netns === undefined ? {} : { netns }),
    });
}

export class ProcessRunner implements Runner {
  run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const full = options.netns === undefined ? [...argv] : ["ip", "netns", "exec", options.netns, ...argv];
    const [file, ...args] = full;
    if (file === undefined) throw new TypeError("empty argv");
    const okCodes = options.okExitCodes ?? [0];
    const started = performance.now();
    return new Promise((resolve, reject) => {
      const child = spawn(file, args, {
        stdio: ["pipe", "pipe", "pipe"],
        timeout: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        killSignal: "SIGKILL",
        signal: options.signal,
        ...(options.env === undefined ? {} : { env: { ...process.env, ...options.env } }),
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on("data", (chunk: Buffer) => out.push(chunk));
      child.stderr.on("data", (chunk: Buffer) => err.push(chunk));
      let failure: ExecError | null = null;
      child.on("error", (cause: NodeJS.ErrnoException) => {
        const reason = cause.name === "AbortError" ? "aborted" : "spawn";
        failure ??= new ExecError(full, null, cause.message, reason, { cause });
      });
      // A child that exits before reading all of stdin raises EPIPE here; its exit status tells the story.
      child.stdin.on("error", () => undefined);
      const input = options.stdin ?? "";
      if (typeof input === "string") child.stdin.end(input);
      else void writePieces(child.stdin, input);
      child.on("close", (code, signal) => {
        const stderr = Buffer.concat(err).toString("utf8");
        if (failure !== null) return reject(failure);
        if (code === null) {
          const reason = signal === "SIGKILL" ? "timeout" : "exit";
          return reject(new ExecError(full, null, stderr || `killed by ${signal}`, reason));
        }
        const result: ExecResult = {
          argv: full,
          exitCode: code,
          stdout: Buffer.concat(out).toString("utf8"),
          stderr,
          durationMs: performance.now() - started,
        };
        if (!okCodes.includes(code)) return reject(new ExecError(full, code, stderr, "exit"));
        resolve(result);
      });
    });
  }
}
