import { ExecError } from "../../../src/kernel/exec.ts";
import type { ExecOptions, ExecResult, Runner } from "../../../src/kernel/exec.ts";

export interface Reply {
  readonly exitCode?: number;
  readonly stdout?: string;
  readonly stderr?: string;
  /** Simulate a spawn failure (tool not installed). */
  readonly spawnError?: boolean;
}

export interface RecordedCall {
  readonly argv: readonly string[];
  readonly options: ExecOptions;
}

/** A Runner that answers from a script keyed by argv and records every call. */
export class ScriptRunner implements Runner {
  readonly calls: RecordedCall[] = [];

  constructor(private readonly answer: (argv: readonly string[]) => Reply) {}

  run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    this.calls.push({ argv, options });
    const reply = this.answer(argv);
    if (reply.spawnError === true) return Promise.reject(new ExecError(argv, null, "ENOENT", "spawn"));
    const exitCode = reply.exitCode ?? 0;
    const result: ExecResult = {
      argv,
      exitCode,
      stdout: reply.stdout ?? "",
      stderr: reply.stderr ?? "",
      durationMs: 0,
    };
    if (!(options.okExitCodes ?? [0]).includes(exitCode)) {
      return Promise.reject(new ExecError(argv, exitCode, result.stderr, "exit"));
    }
    return Promise.resolve(result);
  }
}
