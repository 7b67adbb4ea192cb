/**
 * ipvs mode behind the backend contract (upstream pkg/proxy/ipvs and the ipvs branch of
 * cmd/kube-proxy/app/server_linux.go): the deprecation warning, the platform checks of
 * `CanUseIPVSProxier` (ipset ≥ 6.0, IPVS in the kernel, the scheduler loads), the sysctls and
 * timeouts of `NewProxier`, one proxier per family, a monitor that notices kube-ipvs0 or our
 * chains vanishing, the web view's reader and `CleanupLeftovers` (./cleanup.ts).
 */
import { release } from "node:os";
import { parseDuration } from "../../config/duration.ts";
import { KubeProxyError } from "../../errors.ts";
import { detectBackend } from "../../kernel/detect.ts";
import type { Runner } from "../../kernel/exec.ts";
import { DummyDevice } from "../../kernel/ip.ts";
import { Iptables } from "../../kernel/iptables.ts";
import { Ipset, parseIpsetVersion } from "../../kernel/ipset.ts";
import { Ipvsadm } from "../../kernel/ipvs.ts";
import { ensureSysctl } from "../../kernel/sysctl.ts";
import type { Logger } from "../../log.ts";
import type { FamilyProxier } from "../../proxy/sync.ts";
import { familyOf, type IPFamily } from "../../ip.ts";
import {
  proxiersPerFamily,
  type ModeRuntime,
  type PlatformContext,
  type ProxierDeps,
  type LiveDrift,
  type ProxyBackend,
  type RenderTarget,
} from "../types.ts";
import { cleanupIpvs } from "./cleanup.ts";
import { formatDesired } from "./format.ts";
import { intendedOf, ipvsDrift } from "./drift.ts";
import { ipvsInspectionSource, ipvsInspector, readLiveIpvs } from "./inspect.ts";
import { DEFAULT_SCHEDULER, DUMMY_DEVICE, KUBE_SERVICES } from "./names.ts";
import { addServiceLine, deleteServiceLine } from "./plan.ts";
import { ipvsProxier, type IpvsKernel, type IpvsWriter } from "./proxier.ts";
import { renderIpvs } from "./render.ts";
import { ipvsSettingsFor, nodeAddressesOf, upstreamTestSettings } from "./settings.ts";

/** The node cannot run ipvs mode (no IPVS in the kernel, ipset too old, scheduler missing). */
export class IpvsUnavailableError extends KubeProxyError {
  readonly code = "KPT_IPVS_UNAVAILABLE";
}

/** Upstream's start-up warning (KEP-5495, kubernetes/kubernetes#134539). */
export const DEPRECATION_WARNING =
  "The ipvs proxier is now deprecated and may be removed in a future release. Please use 'nftables' instead.";

const MIN_IPSET: readonly [number, number] = [6, 0];

export const SYSCTL = {
  vsConntrack: "net/ipv4/vs/conntrack",
  connReuseMode: "net/ipv4/vs/conn_reuse_mode",
  expireNoDestConn: "net/ipv4/vs/expire_nodest_conn",
  expireQuiescentTemplate: "net/ipv4/vs/expire_quiescent_template",
  ipForward: "net/ipv4/ip_forward",
  arpIgnore: "net/ipv4/conf/all/arp_ignore",
  arpAnnounce: "net/ipv4/conf/all/arp_announce",
} as const;

/**
 * The sysctls upstream's `NewProxier` sets, in its order. conn_reuse_mode=0 is needed only on
 * kernels 4.1 to 5.8: older ones lack it, 5.9 fixed the connection-reuse stall (#93297).
 */
export function sysctlsFor(kernelRelease: string, strictARP: boolean): { name: string; value: number }[] {
  const m = /^(\d+)\.(\d+)/.exec(kernelRelease);
  const v = m === null ? null : [Number(m[1]), Number(m[2])];
  const atLeast = (major: number, minor: number) =>
    v !== null && (v[0]! > major || (v[0] === major && v[1]! >= minor));
  const out: { name: string; value: number }[] = [{ name: SYSCTL.vsConntrack, value: 1 }];
  if (atLeast(4, 1) && !atLeast(5, 9)) out.push({ name: SYSCTL.connReuseMode, value: 0 });
  out.push(
    { name: SYSCTL.expireNoDestConn, value: 1 },
    { name: SYSCTL.expireQuiescentTemplate, value: 1 },
    { name: SYSCTL.ipForward, value: 1 },
  );
  if (strictARP) out.push({ name: SYSCTL.arpIgnore, value: 1 }, { name: SYSCTL.arpAnnounce, value: 2 });
  return out;
}

/** Seconds of a Go duration flag; 0 keeps the kernel's value. */
function seconds(text: string, field: string): number {
  return Math.floor(parseDuration(text, field) / 1000);
}

/** Upstream `CanUseIPVSProxier`: ipset version, IPVS present, the scheduler usable. */
async function checkPlatform(ipvsadm: Ipvsadm, ipset: Ipset, scheduler: string, log: Logger): Promise<void> {
  let version: string;
  try {
    version = await ipset.version();
  } catch (err) {
    throw new IpvsUnavailableError("ipvs mode needs the ipset tool, which could not be run", { cause: err });
  }
  const parsed = parseIpsetVersion(version);
  if (parsed === null || parsed[0] < MIN_IPSET[0]) {
    throw new IpvsUnavailableError(
      `ipset version ${version} is less than the minimum ${MIN_IPSET.join(".")}`,
    );
  }
  let existing;
  try {
    existing = await ipvsadm.list();
  } catch (err) {
    throw new IpvsUnavailableError("IPVS is not usable (ipvsadm -Ln failed): is ip_vs in the kernel?", {
      cause: err,
    });
  }
  if (existing.some((vs) => vs.scheduler === scheduler)) return;
  // A virtual server on TEST-NET-2 (RFC 5737), created and deleted: the scheduler module loads.
  const probe = {
    protocol: "TCP" as const,
    address: "198.51.100.0",
    port: 20000,
    scheduler,
    persistence: 0,
    schedFlags: [],
  };
  try {
    await ipvsadm.restore([addServiceLine(probe)]);
    await ipvsadm.restore([deleteServiceLine(probe)]);
  } catch (err) {
    throw new IpvsUnavailableError(`IPVS scheduler ${scheduler} is not usable`, { cause: err });
  }
  log.debug({ scheduler }, "IPVS scheduler probe succeeded");
}

function kernelFor(runner: Runner, ipt: Iptables): IpvsKernel {
  const ipvsadm = new Ipvsadm(runner);
  const ipset = new Ipset(runner);
  const dummy = new DummyDevice(runner, DUMMY_DEVICE);
  return {
    listIpvs: () => ipvsadm.list(),
    restoreIpvs: (lines) => ipvsadm.restore(lines),
    saveIpsets: () => ipset.save(),
    restoreIpsets: (lines) => ipset.restore(lines),
    ensureDummyDevice: async () => {
      await dummy.ensure();
    },
    addressesByInterface: () => dummy.addressesByInterface(),
    addAddress: (ip) => dummy.addAddress(ip),
    deleteAddress: (ip) => dummy.deleteAddress(ip),
    ipt,
  };
}

async function open(ctx: PlatformContext): Promise<ModeRuntime> {
  const { config, runner, log } = ctx;
  log.warn(DEPRECATION_WARNING);
  const scheduler = config.ipvs.scheduler === "" ? DEFAULT_SCHEDULER : config.ipvs.scheduler;
  if (config.ipvs.scheduler === "") log.info("IPVS scheduler not specified, use rr by default");
  const ipvsadm = new Ipvsadm(runner);
  const ipset = new Ipset(runner);
  await checkPlatform(ipvsadm, ipset, scheduler, log);

  const { backend } = await detectBackend(runner);
  const ipts = new Map<IPFamily, Iptables>([["IPv4", new Iptables({ runner, family: "IPv4", backend })]]);
  const ipv6 = new Iptables({ runner, family: "IPv6", backend });
  if (
    await ipv6.save("nat").then(
      () => true,
      () => false,
    )
  )
    ipts.set("IPv6", ipv6);
  else log.info("IPv6 iptables not usable: running single-stack IPv4");

  for (const { name, value } of sysctlsFor(release(), config.ipvs.strictARP)) {
    await ensureSysctl(name, value).catch((err: unknown) => {
      throw new IpvsUnavailableError(`can't set sysctl ${name} to ${value}`, { cause: err });
    });
  }
  const timeouts = [
    seconds(config.ipvs.tcpTimeout, "ipvs.tcpTimeout"),
    seconds(config.ipvs.tcpFinTimeout, "ipvs.tcpFinTimeout"),
    seconds(config.ipvs.udpTimeout, "ipvs.udpTimeout"),
  ];
  if (timeouts.some((t) => t > 0)) {
    // Upstream logs and goes on when the timeouts cannot be set.
    await ipvsadm
      .setTimeouts(timeouts[0]!, timeouts[1]!, timeouts[2]!)
      .catch((err: unknown) => log.error({ err }, "Failed to configure IPVS timeouts"));
  }
  const version = await ipts.get("IPv4")!.version();
  const dummy = new DummyDevice(runner, DUMMY_DEVICE);
  const writers = new Map<IPFamily, IpvsWriter>();

  function createProxiers(deps: ProxierDeps): Promise<ReadonlyMap<IPFamily, FamilyProxier<unknown>>> {
    return proxiersPerFamily(ipts.keys(), deps, (family, shared) => {
      const proxier = ipvsProxier({
        kernel: kernelFor(runner, ipts.get(family)!),
        settings: ipvsSettingsFor(config, deps.node, family, deps.localAddresses, version.hasRandomFully),
        excludeCIDRs: (config.ipvs.excludeCIDRs ?? []).filter((c) => familyOf(c) === family),
        featureGates: config.featureGates,
        ...shared,
      });
      writers.set(family, proxier.writer);
      return proxier as FamilyProxier<unknown>;
    });
  }

  return {
    families: [...ipts.keys()],
    metricsOptions: { mode: "ipvs" },
    proxiers: createProxiers,
    async monitor({ intervalMs, signal, onLost }) {
      while (!signal.aborted) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, intervalMs);
          signal.addEventListener("abort", () => {
            clearTimeout(timer);
            resolve();
          });
        });
        if (signal.aborted) return;
        for (const [family, writer] of writers) {
          const drained = await writer.drain().catch((err: unknown) => {
            log.error({ err, ipFamily: family }, "Failed to delete drained IPVS real servers");
            return [];
          });
          if (drained.length > 0)
            log.info({ ipFamily: family, realServers: drained }, "IPVS real servers done draining");
        }
        try {
          const device = await dummy.exists();
          for (const [family, ipt] of ipts) {
            if (!device || !(await ipt.chainExists("nat", KUBE_SERVICES))) {
              log.info({ ipFamily: family }, "kube-ipvs0 or KUBE-SERVICES is gone: forcing a full sync");
              onLost(family);
            }
          }
        } catch (err) {
          log.debug({ err }, "Could not check the ipvs mode's objects");
        }
      }
    },
    inspection: ipvsInspectionSource(runner, ipts, () =>
      [...writers.values()].flatMap((w) => w.servicePorts),
    ),
  };
}

function desiredFor(target: RenderTarget) {
  const settings = target.upstreamTestSettings
    ? upstreamTestSettings(target.family)
    : ipvsSettingsFor(
        target.config,
        target.node,
        target.family,
        target.localAddresses,
        target.kernel.randomFully,
      );
  return renderIpvs({
    state: target.state,
    settings,
    nodeAddresses: nodeAddressesOf(target.localAddresses, target.family),
    featureGates: target.config.featureGates,
  });
}

function render(target: RenderTarget) {
  return { consumer: "ipvsadm -R, ipset restore, iptables-restore", text: formatDesired(desiredFor(target)) };
}

/**
 * `kube-proxy-ts diff` in this mode: the live kernel (the see-inside tools' reader, and
 * kube-ipvs0's addresses) against a full sync's objects. The draining list is the daemon's:
 * here a TCP real server at weight 0 is taken as draining.
 */
async function liveDrift(target: RenderTarget, runner: Runner): Promise<LiveDrift> {
  const { family } = target;
  const desired = desiredFor(target);
  const { reading } = await readLiveIpvs(runner, [family]);
  const bound = await new DummyDevice(runner, DUMMY_DEVICE).addressesByInterface().then(
    (byInterface) => (byInterface.get(DUMMY_DEVICE) ?? []).filter((a) => familyOf(a) === family),
    () => null,
  );
  const drift = ipvsDrift(
    intendedOf(desired),
    {
      virtualServers: reading.virtualServers,
      ipsets: [...reading.ipsets.values()],
      iptables: reading.iptables.get(family) ?? "",
      boundAddresses: bound,
    },
    {
      family,
      excludeCIDRs: (target.config.ipvs.excludeCIDRs ?? []).filter((c) => familyOf(c) === family),
      draining: "weight-zero",
    },
  );
  const save = family === "IPv4" ? "iptables-save" : "ip6tables-save";
  return {
    intended: formatDesired(desired),
    drift,
    source: `ipvsadm -Ln --exact, ipset save, ${save}${bound === null ? "" : `, ip addr (${DUMMY_DEVICE})`}`,
  };
}

export const ipvsBackend: ProxyBackend = {
  mode: "ipvs",
  open,
  cleanup: cleanupIpvs,
  render,
  inspector: ipvsInspector,
  liveDrift,
};
