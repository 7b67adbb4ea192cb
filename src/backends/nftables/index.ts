/**
 * nftables mode behind the backend contract: upstream's platform checks (the nft tool, nf_tables
 * in the kernel, kernel >= 5.13), one proxier per family writing `table ip|ip6 kube-proxy`, a
 * monitor that notices the table vanishing, and `CleanupLeftovers` (./cleanup.ts).
 */
import { release } from "node:os";
import { KubeProxyError } from "../../errors.ts";
import type { NftablesWriterKind } from "../../config/types.ts";
import type { Runner } from "../../kernel/exec.ts";
import { Nft } from "../../kernel/nft.ts";
import type { FamilyProxier } from "../../proxy/sync.ts";
import type { IPFamily } from "../../ip.ts";
import {
  proxiersPerFamily,
  type ModeRuntime,
  type PlatformContext,
  type ProxierDeps,
  type ProxyBackend,
  type LiveDrift,
  type RenderTarget,
} from "../types.ts";
import { cleanupNftables } from "./cleanup.ts";
import { nftablesInspectionSource, nftablesInspector } from "./inspect.ts";
import { KUBE_PROXY_TABLE } from "./names.ts";
import { NetlinkNftablesKernel, readTableOverNetlink } from "./netlink-kernel.ts";
import { listTablesOverNetlink } from "./netlink-listing.ts";
import { nftablesProxier, type NftablesWriter } from "./proxier.ts";
import { readTable } from "./reader.ts";
import { renderNftables } from "./render.ts";
import { nftablesSettingsFor, serviceCIDRsOf, upstreamTestSettings } from "./settings.ts";
import { planFullSync, type NftTransaction } from "./transactions.ts";

/** The node cannot run nftables mode (no nft, no nf_tables, kernel too old). */
export class NftablesUnavailableError extends KubeProxyError {
  readonly code = "KPT_NFTABLES_UNAVAILABLE";
}

/** Upstream's floor: older kernels lack features (and fixes) the ruleset relies on (#122743). */
const MIN_KERNEL: readonly [number, number] = [5, 13];
const SKIP_KERNEL_CHECK_ENV = "KUBE_PROXY_NFTABLES_SKIP_KERNEL_VERSION_CHECK";

/** `6.18.44-foo` → [6, 18]; null when it does not look like a Linux release. */
export function kernelVersion(text: string): [number, number] | null {
  const m = /^(\d+)\.(\d+)/.exec(text);
  return m === null ? null : [Number(m[1]), Number(m[2])];
}

export function kernelTooOld(text: string): boolean {
  const v = kernelVersion(text);
  if (v === null) return false;
  return v[0] < MIN_KERNEL[0] || (v[0] === MIN_KERNEL[0] && v[1] < MIN_KERNEL[1]);
}

/**
 * Upstream's kernel check (platformCheckSupported): why this kernel is refused, or null. Any value
 * of KUBE_PROXY_NFTABLES_SKIP_KERNEL_VERSION_CHECK, even empty, skips it, as upstream's
 * `os.LookupEnv`; a release that is not `MAJOR.MINOR…` is not refused.
 */
export function kernelRefusal(
  kernel: string,
  env: Readonly<Record<string, string | undefined>>,
): string | null {
  if (!kernelTooOld(kernel) || env[SKIP_KERNEL_CHECK_ENV] !== undefined) return null;
  return `nftables mode needs kernel ${MIN_KERNEL.join(".")} or later, this is ${kernel} (set ${SKIP_KERNEL_CHECK_ENV} to try anyway)`;
}

const nftFamily = (family: IPFamily): "ip" | "ip6" => (family === "IPv4" ? "ip" : "ip6");

/** The platform checks; returns the families nf_tables works for here (IPv4 is required). */
async function checkPlatform(ctx: PlatformContext, nft: Nft): Promise<IPFamily[]> {
  try {
    ctx.log.info({ version: await nft.version(), writer: ctx.config.nftables.writer }, "Using nft");
  } catch (err) {
    throw new NftablesUnavailableError("nftables mode needs the nft tool, which could not be run", {
      cause: err,
    });
  }
  const refused = kernelRefusal(release(), process.env);
  if (refused !== null) throw new NftablesUnavailableError(refused);
  // Our table, added in a transaction the kernel checks and does not commit (nft --check).
  try {
    await nft.probe("ip", KUBE_PROXY_TABLE);
  } catch (err) {
    throw new NftablesUnavailableError("nf_tables is not usable in this kernel (could not create a table)", {
      cause: err,
    });
  }
  const families: IPFamily[] = ["IPv4"];
  try {
    await nft.probe("ip6", KUBE_PROXY_TABLE);
    families.push("IPv6");
  } catch (err) {
    ctx.log.info({ err }, "IPv6 nftables not usable: running single-stack IPv4");
  }
  return families;
}

async function open(ctx: PlatformContext): Promise<ModeRuntime> {
  const { config, runner, log } = ctx;
  const nft = new Nft(runner);
  const families = await checkPlatform(ctx, nft);
  const writers = new Map<IPFamily, NftablesWriter>();

  function createProxiers(deps: ProxierDeps): Promise<ReadonlyMap<IPFamily, FamilyProxier<unknown>>> {
    return proxiersPerFamily(families, deps, (family, shared) => {
      const settings = nftablesSettingsFor(config, deps.node, family, deps.localAddresses, deps.serviceCIDRs);
      log.debug({ ipFamily: family, mark: settings.masqueradeMark }, "Using nftables mark for masquerade");
      const proxier = nftablesProxier({
        kernel: kernelFor(runner, family, config.nftables.writer),
        settings,
        featureGates: config.featureGates,
        ...shared,
      });
      writers.set(family, proxier.writer);
      return proxier as FamilyProxier<unknown>;
    });
  }

  return {
    families,
    metricsOptions: { mode: "nftables" },
    proxiers: createProxiers,
    serviceCIDRsChanged: (cidrs) =>
      [...writers]
        .filter(([family, writer]) => writer.setServiceCIDRs(serviceCIDRsOf(cidrs, family)))
        .map(([f]) => f),
    async monitor({ intervalMs, signal, onLost }) {
      // Nobody else may edit our table (upstream's rule); the one thing to watch is it vanishing.
      // Over netlink, not `nft list tables`: that reads the whole table first (seconds of CPU
      // every period at tens of thousands of Services, on the CPUs the packets need).
      while (!signal.aborted) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, intervalMs);
          signal.addEventListener("abort", () => {
            clearTimeout(timer);
            resolve();
          });
        });
        if (signal.aborted) return;
        try {
          const tables = await listTablesOverNetlink();
          for (const family of families) {
            if (!tables.some((t) => t.family === nftFamily(family) && t.name === KUBE_PROXY_TABLE)) {
              log.info({ ipFamily: family }, "nftables table kube-proxy is gone: forcing a full sync");
              onLost(family);
            }
          }
        } catch (err) {
          log.debug({ err }, "Could not list nftables tables");
        }
      }
    },
    inspection: nftablesInspectionSource(runner),
  };
}

/**
 * The kernel side of one family's writer: netlink batches (the default) or `nft -f`. Both send
 * the same transactions; the table is read back over netlink either way (full syncs and the
 * drift check only).
 */
function kernelFor(runner: Runner, family: IPFamily, writer: NftablesWriterKind) {
  const nft = new Nft(runner);
  const netlink = writer === "netlink" ? new NetlinkNftablesKernel({ family: nftFamily(family) }) : null;
  return {
    apply: (transaction: NftTransaction) =>
      netlink === null ? nft.apply(transaction.payload) : netlink.apply(transaction),
    ...(netlink === null
      ? {}
      : {
          applyAll: (transactions: readonly NftTransaction[], onSend?: (t: NftTransaction) => void) =>
            netlink.applyAll(transactions, onSend),
        }),
    read: () => readTableOverNetlink({ family: nftFamily(family) }),
  };
}

function renderRuleset(target: RenderTarget) {
  const settings = target.upstreamTestSettings
    ? upstreamTestSettings(target.family)
    : nftablesSettingsFor(
        target.config,
        target.node,
        target.family,
        target.localAddresses,
        target.serviceCIDRs,
      );
  return renderNftables({ state: target.state, settings, featureGates: target.config.featureGates });
}

function render(target: RenderTarget) {
  return {
    consumer: "nft -f",
    text: planFullSync(renderRuleset(target), null, { resetBaseChains: false }).payload,
  };
}

/** `kube-proxy-ts diff` in this mode: the table read over netlink against a full sync's. */
async function liveDrift(target: RenderTarget): Promise<LiveDrift> {
  const ruleset = renderRuleset(target);
  const read = await readTableOverNetlink({ family: ruleset.family });
  return {
    intended: planFullSync(ruleset, null, { resetBaseChains: false }).payload,
    drift: readTable(ruleset, read.dump, { ifIndex: read.ifIndex }).drift,
    source: `netlink dump of table ${ruleset.family} ${KUBE_PROXY_TABLE}`,
  };
}

export const nftablesBackend: ProxyBackend = {
  mode: "nftables",
  open,
  cleanup: cleanupNftables,
  render,
  inspector: nftablesInspector,
  liveDrift,
};
