import { readFile, readlink, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KubeProxyError } from "../errors.ts";
import type { Runner } from "./exec.ts";

/** A sysctl kube-proxy needs could not be written (read-only /proc/sys, no such knob, no permission). */
export class SysctlError extends KubeProxyError {
  readonly code = "KPT_SYSCTL";

  constructor(
    readonly sysctl: string,
    readonly value: number,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`failed to set sysctl ${sysctl} to ${value}: ${detail}`, options);
  }
}

/** `route_localnet` lets DNAT to 127.0.0.0/8 work for localhost NodePorts. */
export const ROUTE_LOCALNET = "net/ipv4/conf/all/route_localnet";
/** Non-zero ⇒ kube-proxy omits its conntrack INVALID drop rule. */
export const CONNTRACK_TCP_BE_LIBERAL = "net/netfilter/nf_conntrack_tcp_be_liberal";

export interface SysctlOptions {
  /**
   * Read/write through `ip netns exec NS sysctl`: /proc/sys/net of this process shows its own
   * namespace, so another namespace can only be reached by a process running inside it.
   */
  readonly netns?: string;
  /** Needed with `netns`. */
  readonly runner?: Runner;
  /** Where /proc/sys is (tests point it at a temporary directory). */
  readonly procSysRoot?: string;
  readonly timeoutMs?: number;
}

/** Accepts "net/ipv4/ip_forward" or "net.ipv4.ip_forward"; returns the slash form. */
export function sysctlPath(name: string): string {
  return name.includes("/") ? name.replace(/^\/+/, "") : name.replaceAll(".", "/");
}

function runnerFor(options: SysctlOptions): Runner {
  if (options.runner === undefined) throw new TypeError("sysctl with a netns needs a runner");
  return options.runner;
}

export async function readSysctl(name: string, options: SysctlOptions = {}): Promise<string> {
  const path = sysctlPath(name);
  if (options.netns !== undefined) {
    // `sysctl` takes the slash form as-is (a dotted name would break on interface names with dots).
    const result = await runnerFor(options).run(["sysctl", "-n", path], {
      netns: options.netns,
      timeoutMs: options.timeoutMs ?? 5_000,
    });
    return result.stdout.trim();
  }
  return (await readFile(join(options.procSysRoot ?? "/proc/sys", path), "utf8")).trim();
}

export async function writeSysctl(
  name: string,
  value: string | number,
  options: SysctlOptions = {},
): Promise<void> {
  const path = sysctlPath(name);
  if (options.netns !== undefined) {
    await runnerFor(options).run(["sysctl", "-w", `${path}=${value}`], {
      netns: options.netns,
      timeoutMs: options.timeoutMs ?? 5_000,
    });
    return;
  }
  await writeFile(join(options.procSysRoot ?? "/proc/sys", path), `${value}\n`);
}

/**
 * Upstream `EnsureSysctl`: writes only when the current value differs (an unreadable value counts
 * as different, as upstream's ignored read error does); resolves true if it wrote. A failed write
 * is a SysctlError naming the sysctl, the value and the reason.
 */
export async function ensureSysctl(
  name: string,
  value: number,
  options: SysctlOptions = {},
): Promise<boolean> {
  const current = await readSysctl(name, options).catch(() => null);
  if (current !== null && Number(current) === value) return false;
  try {
    await writeSysctl(name, value, options);
  } catch (cause) {
    throw new SysctlError(sysctlPath(name), value, (cause as Error).message, { cause });
  }
  return true;
}

/**
 * True when this process runs in the host's initial network namespace. Host-wide knobs (such as
 * nf_conntrack_max) are left alone from any other namespace: a proxy under test never changes
 * its host.
 */
export async function inInitialNetns(): Promise<boolean> {
  // The kernel itself says so: outside the initial namespace it makes nf_conntrack_max read-only
  // (mode 0444). That also holds in a container with its own PID namespace, where /proc/1 is the
  // container's init and the comparison below would see "initial" in any network namespace.
  const writable = await stat("/proc/sys/net/netfilter/nf_conntrack_max").then(
    (s) => (s.mode & 0o200) !== 0,
    () => null,
  );
  if (writable !== null) return writable;
  const [self, init] = await Promise.all([
    readlink("/proc/self/ns/net"),
    readlink("/proc/1/ns/net").catch(() => ""),
  ]);
  return self === init;
}
