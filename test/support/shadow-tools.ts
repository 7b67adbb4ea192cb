import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { accessSync, constants } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

/*
 * A PATH for the daemon in which some kernel tools are missing or fail: a temporary folder of
 * symlinks to the host's tools (`ip` too, which `ip netns exec` needs), minus the missing ones,
 * with each failing one replaced by a script that prints a message and exits 1. The daemon gets
 * only this folder as its PATH, so it meets the node as if the package were not installed.
 */

/** Every tool the daemon runs (src/kernel/), and `ip`, which the sandbox's `ip netns exec` is. */
export const DAEMON_TOOLS = [
  "ip",
  "sysctl",
  "conntrack",
  "nfacct",
  "nft",
  ...["iptables", "ip6tables"].flatMap((base) =>
    ["", "-nft", "-legacy"].flatMap((flavour) =>
      ["", "-save", "-restore"].map((suffix) => `${base}${flavour}${suffix}`),
    ),
  ),
] as const;

/** All IPv6 iptables tools of every flavour. */
export const IP6TABLES_TOOLS = DAEMON_TOOLS.filter((t) => t.startsWith("ip6tables"));

export interface ShadowTools {
  /** The daemon's environment: `{ PATH }`. */
  readonly env: Readonly<Record<string, string>>;
  dispose(): void;
}

function onHostPath(tool: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    const candidate = join(dir, tool);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this folder
    }
  }
  return undefined;
}

export function shadowTools(faults: {
  readonly missing?: readonly string[];
  readonly failing?: readonly string[];
}): ShadowTools {
  const dir = mkdtempSync(join(tmpdir(), "kpt-tools-"));
  try {
    for (const tool of DAEMON_TOOLS) {
      if (faults.missing?.includes(tool)) continue;
      const file = join(dir, tool);
      if (faults.failing?.includes(tool)) {
        writeFileSync(file, `#!/bin/sh\necho "${tool}: injected failure (test)" >&2\nexit 1\n`);
        chmodSync(file, 0o755);
        continue;
      }
      const target = onHostPath(tool);
      if (target !== undefined) symlinkSync(target, file);
    }
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return { env: { PATH: dir }, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}
