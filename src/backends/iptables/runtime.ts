/**
 * iptables mode's runtime: upstream's iptables proxier set-up (platform checks, one proxier per
 * family, the canary monitor, `CleanupLeftovers`). Loaded only by the daemon and `--cleanup`, so
 * that `render`, `trace` and `explain` do not pay for the kernel tools' modules.
 */
import type { KubeProxyConfiguration } from "../../config/types.ts";
import { startCanaryMonitor } from "../../kernel/canary.ts";
import { detectBackend, type DetectedBackend } from "../../kernel/detect.ts";
import type { Runner } from "../../kernel/exec.ts";
import { Iptables } from "../../kernel/iptables.ts";
import { createNfacctCounter, ensureNfacctCounter, readNfacctCounters } from "../../kernel/nfacct.ts";
import { readNftGeneration } from "../../kernel/nft-generation.ts";
import { checkIptablesUsable } from "../../kernel/preflight.ts";
import {
  CONNTRACK_TCP_BE_LIBERAL,
  ensureSysctl,
  readSysctl,
  ROUTE_LOCALNET,
  SysctlError,
} from "../../kernel/sysctl.ts";
import type { Logger } from "../../log.ts";
import { realClock } from "../../proxy/clock.ts";
import type { FamilyProxier } from "../../proxy/sync.ts";
import type { IPFamily } from "../../ip.ts";
import {
  sharedSyncOptions,
  type CleanupReport,
  type ModeRuntime,
  type PlatformContext,
  type ProxierDeps,
} from "../types.ts";
import {
  JUMP_CHAINS,
  NFACCT_CT_STATE_INVALID_DROPPED_PKTS,
  NFACCT_LOCALHOST_NPS_ACCEPTED_PKTS,
} from "./chains.ts";
import { cleanupLeftovers } from "./cleanup.ts";
import { iptablesInspectionSource } from "./inspect.ts";
import { iptablesProxier, maxServicesPerTransaction } from "./proxier.ts";
import { iptablesSettingsFor } from "./settings.ts";

/** The iptables backend the host uses, and one wrapper per IP family it can run. */
async function openIptables(
  ctx: PlatformContext,
): Promise<{ backend: DetectedBackend; ipts: Map<IPFamily, Iptables> }> {
  const { runner, log } = ctx;
  const detected = await detectBackend(runner);
  log.info({ backend: detected.backend, reason: detected.reason }, "Detected iptables backend");
  const ipts = new Map<IPFamily, Iptables>([
    ["IPv4", new Iptables({ runner, family: "IPv4", backend: detected.backend })],
  ]);
  const ipv6 = new Iptables({ runner, family: "IPv6", backend: detected.backend });
  const [, ipv6Usable] = await Promise.all([
    checkIptablesUsable(runner, detected.backend),
    ipv6.save("nat").then(
      () => true,
      (err: unknown) => {
        log.info({ err }, "IPv6 iptables not usable: running single-stack IPv4");
        return false;
      },
    ),
  ]);
  if (ipv6Usable) ipts.set("IPv6", ipv6);
  return { backend: detected.backend, ipts };
}

/**
 * Creates an nfacct counter at start-up; a failure (no nfacct tool, no kernel support) is logged
 * as upstream does, and the rules then go without that counter's match.
 */
async function startupCounter(ctx: PlatformContext, counter: string): Promise<boolean> {
  const err = await createNfacctCounter(ctx.runner, counter);
  if (err === null) return true;
  ctx.log.error(
    { err, counter },
    "Failed to create nfacct counter; the corresponding metric will not be updated",
  );
  return false;
}

function nfacctReader(runner: Runner, counter: string) {
  return async (): Promise<number | null> => {
    const value = (await readNfacctCounters(runner))?.find((c) => c.name === counter)?.packets;
    return value === undefined ? null : Number(value);
  };
}

/**
 * Localhost NodePorts need route_localnet (docs/iptables.md §3.4). As upstream does, it is set at
 * start-up when they are on, and a failure to set it stops the start-up.
 */
async function enableRouteLocalnet(config: Readonly<KubeProxyConfiguration>, log: Logger): Promise<void> {
  const npa = config.nodePortAddresses ?? [];
  const loopbackIncluded = npa.length === 0 || npa.some((c) => c.startsWith("127.") || c === "0.0.0.0/0");
  if (!loopbackIncluded) return;
  log.info(
    "Setting route_localnet=1 to allow node-ports on localhost; to change this either disable iptables.localhostNodePorts (--iptables-localhost-nodeports) or set nodePortAddresses (--nodeport-addresses) to filter loopback addresses",
  );
  try {
    await ensureSysctl(ROUTE_LOCALNET, 1);
  } catch (err) {
    if (!(err instanceof SysctlError)) throw err;
    throw new SysctlError(
      err.sysctl,
      err.value,
      `${(err.cause as Error).message} (localhost NodePorts need it: set --iptables-localhost-nodeports=false or a --nodeport-addresses without loopback to do without)`,
      { cause: err.cause },
    );
  }
}

export async function open(ctx: PlatformContext): Promise<ModeRuntime> {
  const { config, runner, log } = ctx;
  const { backend, ipts } = await openIptables(ctx);
  let proxiers = new Map<IPFamily, FamilyProxier<unknown>>();

  async function createProxiers(deps: ProxierDeps): Promise<ReadonlyMap<IPFamily, FamilyProxier<unknown>>> {
    const [liberalValue, version, ctStateInvalidDroppedPkts, localhostNodePortsAcceptedPkts] =
      await Promise.all([
        readSysctl(CONNTRACK_TCP_BE_LIBERAL).catch(() => "0"),
        ipts.get("IPv4")!.version(),
        startupCounter(ctx, NFACCT_CT_STATE_INVALID_DROPPED_PKTS),
        startupCounter(ctx, NFACCT_LOCALHOST_NPS_ACCEPTED_PKTS),
      ]);
    const liberal = liberalValue.trim() !== "0";
    const nfacct = { ctStateInvalidDroppedPkts, localhostNodePortsAcceptedPkts };
    const ensureCounters = async () => {
      if (nfacct.ctStateInvalidDroppedPkts)
        await ensureNfacctCounter(runner, NFACCT_CT_STATE_INVALID_DROPPED_PKTS);
      if (nfacct.localhostNodePortsAcceptedPkts)
        await ensureNfacctCounter(runner, NFACCT_LOCALHOST_NPS_ACCEPTED_PKTS);
    };
    const created = new Map<IPFamily, FamilyProxier<unknown>>();
    for (const [family, ipt] of ipts) {
      const settings = iptablesSettingsFor(config, deps.node, family, {
        localAddresses: deps.localAddresses,
        hasRandomFully: version.hasRandomFully,
        conntrackTCPLiberal: liberal,
        nfacct,
      });
      if (family === "IPv4" && settings.localhostNodePorts) await enableRouteLocalnet(config, log);
      const store = deps.stores.get(family);
      if (store === undefined) continue;
      created.set(
        family,
        iptablesProxier({
          ipt,
          settings,
          ...sharedSyncOptions(deps, family, store),
          maxServicesPerTransaction: maxServicesPerTransaction(backend),
          ensureCounters,
        }) as FamilyProxier<unknown>,
      );
    }
    proxiers = created;
    return created;
  }

  return {
    families: [...ipts.keys()],
    metricsOptions: {
      mode: "iptables",
      nfacct: {
        ctStateInvalidDropped: nfacctReader(runner, NFACCT_CT_STATE_INVALID_DROPPED_PKTS),
        localhostNodePortsAccepted: nfacctReader(runner, NFACCT_LOCALHOST_NPS_ACCEPTED_PKTS),
      },
    },
    proxiers: createProxiers,
    async monitor({ intervalMs, signal, onLost }) {
      const monitors = [...ipts].map(([family, ipt]) =>
        startCanaryMonitor({
          ipt,
          tables: ["mangle", "nat", "filter"],
          intervalMs,
          signal,
          log,
          onFlush: () => {
            log.info({ ipFamily: family }, "iptables canary deleted: forcing a full sync");
            if (proxiers.has(family)) onLost(family);
          },
        }),
      );
      await Promise.all(monitors.map((m) => m.done));
    },
    inspection: iptablesInspectionSource(runner, [...ipts.values()], undefined, {
      clock: realClock,
      ...(backend === "nft" ? { generation: () => readNftGeneration() } : {}),
    }),
  };
}

export async function cleanup(ctx: PlatformContext): Promise<CleanupReport> {
  const { ipts } = await openIptables(ctx);
  const errors: unknown[] = [];
  for (const [family, ipt] of ipts) {
    const result = await cleanupLeftovers(ipt, JUMP_CHAINS);
    // Most of these are jump rules that were never there; upstream ignores "not found" too.
    for (const err of result.errors) ctx.log.debug({ err, ipFamily: family }, "Cleanup step did not apply");
  }
  return { mode: "iptables", errors };
}
