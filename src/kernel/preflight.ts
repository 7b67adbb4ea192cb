import { KubeProxyError } from "../errors.ts";
import { ExecError, type Runner } from "./exec.ts";
import { iptablesBinaries, type IptablesBackend } from "./iptables.ts";

/** The node cannot run the proxy at all; the message says what to fix. */
export class StartupCheckError extends KubeProxyError {
  readonly code = "KPT_STARTUP_CHECK";
}

/**
 * What a failed iptables command at start-up means for the operator, or null when the failure
 * says nothing about the node (those surface later, at the first sync, with their own errors).
 */
export function startupProblem(err: unknown): StartupCheckError | null {
  if (!(err instanceof ExecError)) return null;
  const tool = err.argv[0] ?? "iptables";
  if (err.reason === "spawn") {
    return new StartupCheckError(
      `${tool} not found: install the iptables package (it provides iptables-restore and iptables-save)`,
    );
  }
  if (err.reason !== "exit") return null;
  if (/permission denied|must be root|operation not permitted/i.test(err.stderr)) {
    return new StartupCheckError(
      `${tool} was refused (${err.stderr.trim()}): kube-proxy-ts needs root or the CAP_NET_ADMIN capability`,
    );
  }
  if (/table does not exist|insmod|protocol not supported|address family not supported/i.test(err.stderr)) {
    return new StartupCheckError(
      `${tool}: the kernel has no nat table (${err.stderr.trim()}): load the nf_tables (nft) or iptable_nat (legacy) modules`,
    );
  }
  return null;
}

/**
 * Upstream fails at start-up when iptables cannot be used; reading the nat table exercises the
 * tool, the permission and the kernel support at once without changing anything.
 */
export async function checkIptablesUsable(runner: Runner, backend: IptablesBackend): Promise<void> {
  const { save } = iptablesBinaries("IPv4", backend);
  try {
    await runner.run([save, "-t", "nat"], { timeoutMs: 10_000 });
  } catch (err) {
    const problem = startupProblem(err);
    if (problem !== null) throw problem;
  }
}
