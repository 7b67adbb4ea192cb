import { spawn, spawnSync } from "node:child_process";
import type { ChildProcessByStdio } from "node:child_process";
import { Socket } from "node:net";
import type { Readable } from "node:stream";
import { ExecError } from "./exec.ts";

export interface BackgroundOptions {
  /** Run inside this network namespace (`ip netns exec NAME …`). */
  readonly netns?: string;
  /** Extra environment variables for the child (the parent's environment is inherited). */
  readonly env?: Readonly<Record<string, string>>;
}

/** Upper bound on the output kept per stream, so a chatty child cannot grow the parent's memory. */
const MAX_KEPT_OUTPUT = 64 * 1024;

/**
 * A long-running child process (a pod's server, a proxy under test). Its output is kept so a
 * caller can wait for a readiness line; `stop()` kills it and resolves once it has exited.
 */
export class BackgroundProcess {
  readonly argv: readonly string[];
  readonly pid: number | undefined;
  private readonly child: ChildProcessByStdio<null, Readable, Readable>;
  private stdoutText = "";
  private stderrText = "";
  private exitState: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private spawnError: Error | null = null;
  private readonly exited: Promise<void>;
  private readonly listeners = new Set<() => void>();

  constructor(argv: readonly string[], options: BackgroundOptions = {}) {
    const full = options.netns === undefined ? [...argv] : ["ip", "netns", "exec", options.netns, ...argv];
    const [file, ...args] = full;
    if (file === undefined) throw new TypeError("empty argv");
    this.argv = full;
    this.child = spawn(file, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: options.env === undefined ? process.env : { ...process.env, ...options.env },
    });
    this.pid = this.child.pid;
    this.child.stdout.on("data", (chunk: Buffer) => {
      this.stdoutText = keepTail(this.stdoutText + chunk.toString("utf8"));
      this.notify();
    });
    this.child.stderr.on("data", (chunk: Buffer) => {
      this.stderrText = keepTail(this.stderrText + chunk.toString("utf8"));
      this.notify();
    });
    this.exited = new Promise((resolve) => {
      this.child.on("error", (cause) => {
        this.spawnError = cause;
        this.notify();
        resolve();
      });
      this.child.on("close", (code, signal) => {
        this.exitState = { code, signal };
        this.notify();
        resolve();
      });
    });
  }

  get stdout(): string {
    return this.stdoutText;
  }

  get stderr(): string {
    return this.stderrText;
  }

  get running(): boolean {
    return this.exitState === null && this.spawnError === null;
  }

  /**
   * Resolves with the first stdout line matching `pattern`. Rejects if the child exits first or
   * nothing matched within `timeoutMs`, with the child's stderr in the error.
   */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const line = this.stdoutText.split("\n").find((candidate) => pattern.test(candidate));
        if (line !== undefined) {
          finish();
          resolve(line);
          return true;
        }
        if (!this.running) {
          finish();
          reject(this.failure("exit"));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        finish();
        reject(this.failure("timeout"));
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.listeners.delete(listener);
      };
      const listener = (): void => void check();
      this.listeners.add(listener);
      check();
    });
  }

  /** Sends SIGTERM, then SIGKILL after `graceMs`; resolves when the child is gone. Idempotent. */
  async stop(graceMs = 2_000): Promise<void> {
    if (!this.running) return this.exited;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Lets this process exit while the child keeps running (its output is no longer read). */
  unref(): void {
    this.child.unref();
    for (const stream of [this.child.stdout, this.child.stderr]) {
      if (stream instanceof Socket) stream.unref();
    }
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }

  private failure(reason: "exit" | "timeout"): ExecError {
    if (this.spawnError !== null) {
      return new ExecError(this.argv, null, this.spawnError.message, "spawn", { cause: this.spawnError });
    }
    const code = this.exitState?.code ?? null;
    const stderr = this.stderrText || (this.exitState?.signal ? `killed by ${this.exitState.signal}` : "");
    return new ExecError(this.argv, code, stderr, reason);
  }
}

function keepTail(text: string): string {
  return text.length > MAX_KEPT_OUTPUT ? text.slice(text.length - MAX_KEPT_OUTPUT) : text;
}

/** Starts `argv` in the background (optionally inside a network namespace). */
export function spawnBackground(argv: readonly string[], options: BackgroundOptions = {}): BackgroundProcess {
  return new BackgroundProcess(argv, options);
}

/**
 * Runs a command synchronously, for the one place where nothing asynchronous may happen: the
 * process `exit` handler that removes a sandbox a caller forgot to dispose. Returns the exit code.
 */
export function runSync(argv: readonly string[], timeoutMs = 5_000): number | null {
  const [file, ...args] = argv;
  if (file === undefined) throw new TypeError("empty argv");
  const result = spawnSync(file, args, { stdio: "ignore", timeout: timeoutMs, killSignal: "SIGKILL" });
  return result.status;
}
