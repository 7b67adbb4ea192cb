/**
 * The registry of proxy modes, keyed by `--proxy-mode`. Adding a mode is adding its folder and
 * one line here; nothing in cli/ or daemon/ names a mode. Modules load lazily, so a command pays
 * only for the mode it uses.
 */
import type { ProxyMode } from "../config/types.ts";
import { InputError } from "../errors.ts";
import type { CleanupReport, PlatformContext, ProxyBackend } from "./types.ts";

interface Registration {
  /** The mode itself; absent while this version can only clean up after it. */
  readonly load?: () => Promise<ProxyBackend>;
  /** Removes what the mode leaves in the kernel; absent while this version knows nothing of it. */
  readonly cleanup?: () => Promise<(ctx: PlatformContext) => Promise<CleanupReport>>;
}

const REGISTRY: Readonly<Record<ProxyMode, Registration>> = {
  iptables: {
    load: async () => (await import("./iptables/index.ts")).iptablesBackend,
    cleanup: async () => (await import("./iptables/index.ts")).iptablesBackend.cleanup,
  },
  nftables: {
    load: async () => (await import("./nftables/index.ts")).nftablesBackend,
    cleanup: async () => (await import("./nftables/cleanup.ts")).cleanupNftables,
  },
  ipvs: {
    load: async () => (await import("./ipvs/index.ts")).ipvsBackend,
    cleanup: async () => (await import("./ipvs/cleanup.ts")).cleanupIpvs,
  },
};

export const MODES = Object.keys(REGISTRY) as ProxyMode[];

/** The modes this version can run. */
export function availableModes(): ProxyMode[] {
  return MODES.filter((m) => REGISTRY[m].load !== undefined);
}

export async function backendFor(mode: ProxyMode, flag = "--proxy-mode"): Promise<ProxyBackend> {
  const load = REGISTRY[mode]?.load;
  if (load === undefined) {
    throw new InputError(
      flag,
      `${mode} mode is not available in this version; available: ${availableModes().join(", ")}`,
    );
  }
  return load();
}

/**
 * Which other modes' leftovers a mode removes at start-up (upstream `platformCleanup`): iptables
 * and ipvs share the iptables chains, so each leaves the other alone and removes nftables'
 * tables; nftables removes both iptables-based modes' objects.
 */
export function modesToCleanAtStart(mode: ProxyMode): ProxyMode[] {
  return mode === "nftables" ? ["iptables", "ipvs"] : ["nftables"];
}

/** Removes the leftovers of `modes`, in order, going on past failures. */
export async function cleanupModes(
  modes: readonly ProxyMode[],
  ctx: PlatformContext,
): Promise<CleanupReport[]> {
  const reports: CleanupReport[] = [];
  for (const mode of modes) {
    const cleanup = REGISTRY[mode].cleanup;
    if (cleanup === undefined) {
      ctx.log.info({ mode }, "This version does not know this mode's objects: none removed");
      continue;
    }
    reports.push(await (await cleanup())(ctx));
  }
  return reports;
}
