/**
 * The daemon's composition (upstream `cmd/kube-proxy/app` `ProxyServer.Run` plus the metaproxier):
 * one state store per IP family fed by one source, the mode's proxiers behind a bounded-frequency
 * runner each, the health and metrics servers, the service health-check servers, the mode's kernel
 * monitor, and the other modes' leftovers removed at start. Nothing here names a mode: the mode
 * comes from the registry.
 *
 * Fatal means fatal: when any part fails for good (the source cannot read its input, a server
 * with --bind-address-hard-fail cannot bind, the config file changed), everything is stopped and
 * `runDaemon` rejects, so the process exits non-zero. Rules already programmed stay as they are.
 */
import { availableParallelism } from "node:os";
import { setMaxListeners } from "node:events";
import { watch } from "node:fs";
import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import type { Registry } from "prom-client";
import { cleanupModes, modesToCleanAtStart } from "../backends/index.ts";
import type { ModeRuntime, ProxyBackend } from "../backends/types.ts";
import { parseDuration } from "../config/duration.ts";
import type { KubeProxyConfiguration, ProxyMode } from "../config/types.ts";
import { InputError, KubeProxyError } from "../errors.ts";
import { nodeRef, type EventRecorder } from "../k8s/events.ts";
import type { EndpointSlice, Node, Service } from "../k8s/objects.ts";
import { reconcileUdpConntrack } from "../kernel/conntrack.ts";
import type { Runner } from "../kernel/exec.ts";
import { localAddresses } from "../kernel/ip.ts";
import { applyOomScoreAdj } from "../kernel/oom.ts";
import { ensureSysctl, inInitialNetns, SysctlError } from "../kernel/sysctl.ts";
import type { Logger } from "../log.ts";
import { ProxyStateStore } from "../proxy/changetracker.ts";
import { realClock } from "../proxy/clock.ts";
import { udpConntrackModel } from "../proxy/conntrack.ts";
import { conntrackSysctls } from "../proxy/conntracksysctls.ts";
import { healthTimeoutForSyncPeriod, ProxyHealth, toBeDeletedTaint } from "../proxy/health.ts";
import { createProxyMetrics } from "../proxy/metrics.ts";
import { nodeInfoFromObject } from "../proxy/node.ts";
import { BoundedFrequencyRunner } from "../proxy/runner.ts";
import { localReadyEndpoints } from "../proxy/state.ts";
import { FULL_SYNC_PERIOD_MS, type FamilyProxier, type SyncReport } from "../proxy/sync.ts";
import type { IPFamily } from "../ip.ts";
import type { ProxyState } from "../proxy/types.ts";
import { serveProxyHealth } from "../server/healthz.ts";
import { keepServing, type HttpListener } from "../server/httpserver.ts";
import { serveMetrics } from "../server/metrics.ts";
import { debugDump, type DebugSource } from "../server/debug.ts";
import { ServiceHealthServer } from "../server/servicehealth.ts";
import { serveWeb } from "../server/web.ts";
import type { Source } from "../source/types.ts";
import { HandlerBuffer } from "./buffer.ts";

export interface DaemonParts {
  readonly config: Readonly<KubeProxyConfiguration>;
  readonly log: Logger;
  readonly runner: Runner;
  readonly backend: ProxyBackend;
  readonly source: Source;
  /** Kubernetes Events, when there is an API server to record them in. */
  readonly events: EventRecorder | null;
  readonly registry: Registry;
  readonly nodeName: string;
  /** The --config file: upstream exits when it changes so that its supervisor restarts it. */
  readonly configPath: string | null;
  readonly initOnly: boolean;
  /** `--web-bind-address`; "" = the web view is off (the default). */
  readonly webBindAddress: string;
  /** `--service-cluster-ip-range`: the Service CIDRs while the source has no ServiceCIDR objects. */
  readonly serviceCIDRFallback: readonly string[];
  /** Aborting it stops the daemon (the CLI wires SIGTERM/SIGINT to it). */
  readonly stop: AbortController;
}

/** A part of the daemon stopped for good; the daemon stops with it. */
export class DaemonStoppedError extends KubeProxyError {
  readonly code = "KPT_DAEMON_STOPPED";
}

/** `--cleanup`: every mode's objects, whatever mode is configured (upstream `platformCleanup`). */
export async function cleanupAllModes(
  ctx: Pick<DaemonParts, "config" | "runner" | "log">,
  modes: readonly ProxyMode[],
): Promise<void> {
  const reports = await cleanupModes(modes, ctx);
  const failed = reports.filter((r) => r.errors.length > 0);
  for (const r of failed) for (const err of r.errors) ctx.log.error({ err, mode: r.mode }, "Cleanup failed");
  if (failed.length > 0)
    throw new DaemonStoppedError(
      `cleanup of ${failed.map((r) => r.mode).join(", ")} mode objects failed (see the log)`,
    );
  ctx.log.info("Cleanup complete");
}

/**
 * How far V8 lets the old generation grow past what the last full collection kept, in percent,
 * in the daemon. V8's default factor (up to 4x on a large machine) let a 10,000 x 10 daemon that
 * keeps about 90 MB grow its heap to 168 MB of mostly garbage after reading the manifests; at 25%
 * it peaks at 182 MB of RSS instead of 217 MB, for about 0.5 s more CPU in the first sync
 * (bench/README.md). The flag is read at every full collection, so setting it here works; the
 * CLI keeps V8's defaults. (NODE_OPTIONS does not accept it.)
 */
export const DAEMON_HEAP_GROWING_PERCENT = 25;

export async function runDaemon(parts: DaemonParts): Promise<void> {
  const { config, log, runner, source, nodeName, registry, backend, stop } = parts;
  setFlagsFromString(`--heap-growing-percent=${DAEMON_HEAP_GROWING_PERCENT}`);
  const clock = realClock;
  const syncPeriodMs = parseDuration(config.iptables.syncPeriod, "iptables.syncPeriod");
  const minSyncMs = parseDuration(config.iptables.minSyncPeriod, "iptables.minSyncPeriod");
  // Every loop, server, watch and back-off of the daemon listens on this one signal: more than
  // Node's default of 10 is expected, not a leak.
  setMaxListeners(64, stop.signal);
  let fatal: unknown = null;
  const failWith = (err: unknown) => {
    if (fatal === null) {
      fatal = err;
      log.error({ err }, "Fatal error: stopping (rules stay in place)");
    }
    stop.abort();
  };
  /** A long-running part: its failure stops everything. */
  const part = (p: Promise<void>): Promise<void> => p.catch(failWith);

  // The source starts reading now: its objects are held (HandlerBuffer) while the mode's
  // platform checks, the other modes' clean-up and the start-up sysctls run beside it.
  const buffer = new HandlerBuffer();
  const sourceEnded = source.start(buffer, stop.signal).then(
    () => "ended" as const,
    (err: unknown) => {
      failWith(err);
      return "ended" as const;
    },
  );
  const ctx = { config, runner, log };
  const cleanupOthers = async () => {
    for (const report of await cleanupModes(modesToCleanAtStart(backend.mode), ctx))
      for (const err of report.errors)
        log.error({ err, mode: report.mode }, "Failed to clean up another mode's leftovers");
  };
  let runtime: ModeRuntime;
  let addresses: readonly string[];
  try {
    [runtime, addresses] = await Promise.all([
      backend.open(ctx),
      localAddresses(runner),
      cleanupOthers(),
      applyConntrackSysctls(config, log),
      // Upstream logs this at -v=2 only: a container without CAP_SYS_RESOURCE may not lower it.
      applyOomScoreAdj(config.oomScoreAdj).catch((err: unknown) =>
        log.debug({ err, value: config.oomScoreAdj }, "Failed to apply OOMScore"),
      ),
    ]);
  } catch (err) {
    // The mode cannot run here: stop the source that was already reading, then fail.
    stop.abort();
    await sourceEnded;
    throw err;
  }

  const metrics = createProxyMetrics(registry, runtime.metricsOptions);
  const health = new ProxyHealth(healthTimeoutForSyncPeriod(syncPeriodMs), clock);
  if (parts.configPath !== null) {
    const path = parts.configPath;
    watch(path, { signal: stop.signal, persistent: false }, () => {
      if (fatal !== null) return;
      log.error({ path }, "Configuration file changed; exiting so that it is reloaded");
      failWith(new InputError("--config", `content of ${path} was updated; restart to apply it`));
    });
  }

  // Objects arrive before the proxiers exist (we need the Node for IPs); queue them per family.
  let nodeObject: Node | null = null;
  const stores = new Map<IPFamily, ProxyStateStore>();
  for (const family of runtime.families)
    stores.set(family, new ProxyStateStore({ family, nodeName, featureGates: config.featureGates }));
  let synced!: () => void;
  const initialSync = new Promise<"synced">((resolve) => (synced = () => resolve("synced")));
  let proxiers = new Map<IPFamily, { proxier: FamilyProxier<unknown>; runner: BoundedFrequencyRunner }>();
  // The ServiceCIDR objects' CIDRs, or the flag's while there are none (or no such resource).
  let serviceCIDRs: readonly string[] = parts.serviceCIDRFallback;
  const queue = (family: IPFamily) => {
    health.queuedUpdate(family);
    metrics.syncProxyRulesLastQueuedTimestamp.set({ ip_family: family }, clock.now() / 1000);
    proxiers.get(family)?.runner.run();
  };
  buffer.attach({
    onService(previous: Service | null, current: Service | null) {
      for (const [family, store] of stores) if (store.serviceChanges.update(previous, current)) queue(family);
      metrics.serviceChangesTotal.inc();
    },
    onEndpointSlice(previous: EndpointSlice | null, current: EndpointSlice | null) {
      for (const [family, store] of stores) {
        const pending =
          current === null
            ? store.endpointsChanges.endpointSliceUpdate(previous!, true)
            : store.endpointsChanges.endpointSliceUpdate(current, false);
        if (pending) queue(family);
      }
      metrics.endpointChangesTotal.inc();
    },
    onNode(node: Node | null) {
      nodeObject = node;
      health.setNode(
        node === null
          ? null
          : {
              deleting: node.metadata.deletionTimestamp != null,
              toBeDeletedTaint: node.spec.taints.some((t) => t.key === toBeDeletedTaint),
            },
      );
      for (const [family, store] of stores) {
        if (store.nodeUpdate(node)) {
          proxiers.get(family)?.proxier.forceFullSync();
          queue(family);
        }
      }
    },
    onServiceCIDRs(cidrs: readonly string[] | null) {
      serviceCIDRs = cidrs === null || cidrs.length === 0 ? parts.serviceCIDRFallback : cidrs;
      log.info({ serviceCIDRs }, "Service CIDRs");
      if (proxiers.size === 0) return;
      for (const family of runtime.serviceCIDRsChanged?.(serviceCIDRs) ?? []) {
        proxiers.get(family)?.proxier.forceFullSync();
        queue(family);
      }
    },
    onSynced() {
      synced();
    },
  });
  const first = await Promise.race([initialSync, sourceEnded]);
  if (first !== "synced") {
    // Stopped by a signal before anything was synced, or the source gave up: nothing to program.
    if (fatal === null && !stop.signal.aborted)
      failWith(new DaemonStoppedError("the source of Services stopped before its initial sync"));
    return finish();
  }
  const node = nodeInfoFromObject(nodeName, nodeObject);
  if (nodeObject === null)
    log.warn(
      { node: nodeName },
      "No Node object found for this node; using bindAddress or loopback as node IP",
    );

  const serviceHealth = new ServiceHealthServer({
    proxyHealth: health,
    hostname: nodeName,
    log,
    onListenError: (svc, message) =>
      void parts.events?.eventf(
        { kind: "Service", apiVersion: "v1", namespace: svc.namespace, name: svc.name },
        "Warning",
        "FailedToStartServiceHealthcheck",
        "Listen",
        message,
      ),
  });
  const primaryFamily = runtime.families[0];
  const onSync = (report: SyncReport<unknown>, state: ProxyState) => {
    if (!report.ok || report.family !== primaryFamily) return;
    const wanted = [...state.services.values()]
      .filter((sp) => sp.healthCheckNodePort !== 0)
      .map((sp) => ({ namespace: sp.name.namespace, name: sp.name.name, port: sp.healthCheckNodePort }));
    void serviceHealth.sync(wanted).then(() => serviceHealth.syncEndpoints(localReadyEndpoints(state)));
  };
  let created: ReadonlyMap<IPFamily, FamilyProxier<unknown>>;
  try {
    created = await runtime.proxiers({
      node,
      localAddresses: addresses,
      stores,
      clock,
      log,
      health,
      metrics,
      syncPeriodMs,
      reconcileConntrack: (family, state) => reconcileUdpConntrack(runner, family, udpConntrackModel(state)),
      onSync,
      serviceCIDRs,
    });
  } catch (err) {
    // A proxier could not be set up (e.g. route_localnet not writable): nothing runs half-way.
    stop.abort();
    await sourceEnded;
    throw err;
  }
  proxiers = new Map(
    [...created].map(([family, proxier]) => [
      family,
      {
        proxier,
        runner: new BoundedFrequencyRunner(
          `sync-runner-${family}`,
          async () => {
            await proxier.syncProxyRules();
          },
          { minInterval: minSyncMs, retryInterval: syncPeriodMs, maxInterval: FULL_SYNC_PERIOD_MS },
          clock,
          { onError: () => undefined },
        ),
      },
    ]),
  );

  if (parts.initOnly) {
    log.info("Initialization done (--init-only)");
    stop.abort();
    await sourceEnded;
    return finish();
  }

  const loops: Promise<void>[] = [sourceEnded.then(() => undefined)];
  const serve = (what: string, address: string, listen: () => Promise<HttpListener>) => {
    if (address === "") return;
    loops.push(
      part(
        keepServing(listen, {
          clock,
          signal: stop.signal,
          hardFail: config.bindAddressHardFail,
          onError: (err) => log.error({ err, address }, `Failed to start ${what} server`),
          onListening: () => log.info({ address }, `Serving ${what}`),
        }),
      ),
    );
  };
  serve("healthz", config.healthzBindAddress, () =>
    serveProxyHealth({ health, metrics }, config.healthzBindAddress),
  );
  const debug: DebugSource = {
    inspect: () =>
      Promise.all(
        [...proxiers].map(async ([family, { proxier }]) => ({ family, inspection: await proxier.inspect() })),
      ),
    failures: () => [...proxiers.values()].flatMap(({ proxier }) => proxier.lastFailure ?? []),
  };
  serve("metrics", config.metricsBindAddress, () =>
    serveMetrics({ registry, proxyMode: config.mode, config, debug }, config.metricsBindAddress),
  );
  // SIGUSR1: the same as the debug endpoints, into one file, for a node without the metrics address.
  const onUsr1 = () => {
    const file = join(
      process.env["KUBE_PROXY_TS_DEBUG_DIR"] ?? tmpdir(),
      `kube-proxy-ts-debug.${process.pid}.txt`,
    );
    debugDump(debug)
      .then((dump) => writeFile(file, dump))
      .then(
        () => log.info({ path: file }, "Wrote the debug dump (SIGUSR1)"),
        (err: unknown) => log.error({ err, path: file }, "Failed to write the debug dump"),
      );
  };
  process.on("SIGUSR1", onUsr1);
  stop.signal.addEventListener("abort", () => process.off("SIGUSR1", onUsr1), { once: true });
  serve("web view", parts.webBindAddress, () =>
    serveWeb(parts.webBindAddress, {
      source: runtime.inspection,
      clock,
      onError: (err) => log.error({ err }, "Web view request failed"),
    }),
  );

  for (const [family, { proxier, runner: syncRunner }] of proxiers) {
    proxier.setInitialized();
    health.updated(family);
    loops.push(part(syncRunner.loop(stop.signal)));
    syncRunner.run();
  }
  loops.push(
    part(
      runtime.monitor({
        intervalMs: syncPeriodMs,
        signal: stop.signal,
        onLost: (family) => {
          const entry = proxiers.get(family);
          entry?.proxier.forceFullSync();
          entry?.runner.run();
        },
      }),
    ),
  );
  if (!stop.signal.aborted) {
    log.info({ node: nodeName, mode: backend.mode, families: [...proxiers.keys()] }, "kube-proxy-ts started");
    void parts.events?.eventf(nodeRef(nodeName), "Normal", "Starting", "StartKubeProxy", "");
  }
  await Promise.all(loops);
  await serviceHealth.close();
  return finish();

  function finish(): void {
    if (fatal !== null) throw fatal;
  }
}

/**
 * Upstream's start-up conntrack sysctls. As upstream does, a value that differs and cannot be
 * written (a read-only /proc/sys) stops the start-up; the message says which configuration field
 * set to 0 leaves that sysctl alone.
 */
async function applyConntrackSysctls(config: Readonly<KubeProxyConfiguration>, log: Logger): Promise<void> {
  const initial = await inInitialNetns().catch(() => false);
  for (const sysctl of conntrackSysctls(config, availableParallelism())) {
    if (sysctl.hostWide && !initial) {
      log.info(
        { sysctl: sysctl.name },
        "Not in the host's network namespace: leaving the host-wide sysctl alone",
      );
      continue;
    }
    try {
      if (await ensureSysctl(sysctl.name, sysctl.value))
        log.info({ sysctl: sysctl.name, value: sysctl.value }, "Set sysctl");
    } catch (err) {
      if (!(err instanceof SysctlError)) throw err;
      throw new SysctlError(err.sysctl, err.value, `${(err.cause as Error).message} (${sysctl.remedy})`, {
        cause: err.cause,
      });
    }
  }
}
