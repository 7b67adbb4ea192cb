import { KubeProxyError } from "../errors.ts";

/** A sandbox topology request that cannot be built (bad name, address, or an unknown role). */
export class SandboxError extends KubeProxyError {
  readonly code = "KPT_SANDBOX";
}

/** Tearing a sandbox down failed for some namespaces; the others were still removed. */
export class SandboxCleanupError extends KubeProxyError {
  readonly code = "KPT_SANDBOX_CLEANUP";

  constructor(readonly failures: readonly unknown[]) {
    super(`sandbox cleanup failed ${failures.length} time(s): ${failures.map(describe).join("; ")}`, {
      cause: failures[0],
    });
  }
}

function describe(failure: unknown): string {
  return failure instanceof Error ? failure.message : String(failure);
}
