import { availableParallelism } from "node:os";
import { setMaxListeners } from "node:events";
import { watch, writeFileSync } from "node:fs";
import { Registry } from "prom-client";
import { stringify as toYaml } from "yaml";
import { iptablesSettingsFor } from "../backends/iptables/settings.ts";
import { IptablesProxier, maxServicesPerTransaction, type SyncReport } from "../backends/iptables/proxier.ts";
import {
  JUMP_CHAINS,
  NFACCT_CT_STATE_INVALID_DROPPED_PKTS,
  NFACCT_LOCALHOST_NPS_ACCEPTED_PKTS,
} from "../backends/iptables/chains.ts";
import { resolveConfiguration } from "../config/load.ts";
import { parseDuration } from "../config/duration.ts";
import { nodeName as resolveNodeName, type NodeInfo } from "../config/node.ts";
import type { KubeProxyConfiguration } from "../config/types.ts";
import { InputError } from "../errors.ts";
import type { EndpointSlice, Node, Service } from "../k8s/objects.ts";
import { KubeClient } from "../k8s/client.ts";
import { buildRestConfig } from "../k8s/kubeconfig.ts";
import { cleanupLeftovers } from "../backends/iptables/cleanup.ts";
import { detectBackend } from "../kernel/detect.ts";
import { ProcessRunner, type Runner } from "../kernel/exec.ts";
import { Iptables } from "../kernel/iptables.ts";
import { localAddresses } from "../kernel/ip.ts";
import { ensureNfacctCounter, readNfacctCounters } from "../kernel/nfacct.ts";
import {
  CONNTRACK_TCP_BE_LIBERAL,
  ensureSysctl,
  inInitialNetns,
  ROUTE_LOCALNET,
  readSysctl,
  writeSysctl,
} from "../kernel/sysctl.ts";
import { conntrackSysctls } from "../proxy/conntracksysctls.ts";
import { reconcileUdpConntrack, udpConntrackModel } from "../kernel/conntrack.ts";
import { startCanaryMonitor } from "../kernel/canary.ts";
import { createLogger, type Logger } from "../log.ts";
import { ProxyStateStore } from "../proxy/changetracker.ts";
import { realClock } from "../proxy/clock.ts";
import { healthTimeoutForSyncPeriod, ProxyHealth, toBeDeletedTaint } from "../proxy/health.ts";
import { createProxyMetrics } from "../proxy/metrics.ts";
import { checkIptablesUsable } from "../kernel/preflight.ts";
import { nodeInfoFromObject } from "../proxy/nodeinfo.ts";
import { BoundedFrequencyRunner } from "../proxy/runner.ts";
import type { IPFamily, ProxyState } from "../proxy/types.ts";
import { serveProxyHealth } from "../server/healthz.ts";
import { keepServing, type HttpListener } from "../server/httpserver.ts";
import { serveMetrics } from "../server/metrics.ts";
import { ServiceHealthServer } from "../server/servicehealth.ts";
import { kernelWebSource, serveWeb } from "../server/web.ts";
import { EventRecorder, nodeRef } from "../k8s/events.ts";
import { ApiServerSource } from "../source/apiserver.ts";
import { DirectorySource } from "../source/directory.ts";
import type { Source } from "../source/types.ts";
import { FULL_SYNC_PERIOD_MS } from "../backends/iptables/proxier.ts";

/** `kube-proxy-ts [run]`: the daemon, or one of its one-shot modes (--cleanup, --write-config-to). */
export async function runDaemonCommand(options: Record<string, unknown>): Promise<void> {
  const { config, warnings } = resolveConfiguration(options);
  const log = createLogger(config.logging.verbosity);
  for (const warning of warnings) log.warn(warning);
  const writeTo = options["writeConfigTo"];
  if (typeof writeTo === "string") {
    writeFileSync(writeTo, toYaml(config));
    log.info({ path: writeTo }, "Wrote configuration");
    return;
  }
  if (config.mode !== "iptables") {
    throw new InputError(
      "--proxy-mode",
      `${config.mode} mode is not available in this version; use iptables`,
    );
  }
  const runner = new ProcessRunner();
  const backend = await detectBackend(runner);
  log.info({ backend: backend.backend, reason: backend.reason }, "Detected iptables backend");
  await checkIptablesUsable(runner, backend.backend);
  const families = await supportedFamilies(runner, backend.backend, log);
  const ipts = new Map(
    families.map((f) => [f, new Iptables({ runner, family: f, backend: backend.backend })] as const),
  );

  if (options["cleanup"] === true) {
    for (const [family, ipt] of ipts) {
      const result = await cleanupLeftovers(ipt, JUMP_CHAINS);
      // Most of these are jump rules that were never there; upstream ignores "not found" too.
      for (const err of result.errors) log.debug({ err, ipFamily: family }, "Cleanup step did not apply");
    }
    log.info("Cleanup complete");
    return;
  }

  const registry = new Registry();
  const manifests = options["manifests"];
  const name = resolveNodeName(config);
  let source: Source;
  let client: KubeClient | null = null;
  let events: EventRecorder | null = null;
  if (typeof manifests === "string") {
    source = new DirectorySource(manifests, name, log);
  } else {
    const master = options["master"];
    const restConfig = await buildRestConfig({
      kubeconfig: config.clientConnection.kubeconfig,
      ...(typeof master === "string" ? { master } : {}),
    });
    log.info({ server: restConfig.server, origin: restConfig.origin }, "Using the API server");
    client = new KubeClient(restConfig, {
      qps: config.clientConnection.qps,
      burst: config.clientConnection.burst,
    });
    source = new ApiServerSource({ client, nodeName: name, log, registry });
    events = new EventRecorder(client, name, log);
  }
  const configPath = options["config"];
  try {
    await runDaemon({
      config,
      log,
      runner,
      ipts,
      backend: backend.backend,
      source,
      events,
      registry,
      nodeName: name,
      configPath: typeof configPath === "string" && configPath !== "" ? configPath : null,
      initOnly: options["initOnly"] === true,
      webBindAddress: typeof options["webBindAddress"] === "string" ? options["webBindAddress"] : "",
    });
  } finally {
    client?.close();
  }
}

async function supportedFamilies(
  runner: Runner,
  backend: "legacy" | "nft",
  log: Logger,
): Promise<IPFamily[]> {
  const out: IPFamily[] = ["IPv4"];
  try {
    await new Iptables({ runner, family: "IPv6", backend }).save("nat");
    out.push("IPv6");
  } catch (err) {
    log.info({ err }, "IPv6 iptables not usable: running single-stack IPv4");
  }
  return out;
}

interface DaemonParts {
  readonly config: Readonly<KubeProxyConfiguration>;
  readonly log: Logger;
  readonly runner: Runner;
  readonly ipts: ReadonlyMap<IPFamily, Iptables>;
  readonly backend: "legacy" | "nft";
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
}

async function runDaemon(parts: DaemonParts): Promise<void> {
  const { config, log, runner, ipts, source, nodeName, registry } = parts;
  const clock = realClock;
  const syncPeriodMs = parseDuration(config.iptables.syncPeriod, "iptables.syncPeriod");
  const minSyncMs = parseDuration(config.iptables.minSyncPeriod, "iptables.minSyncPeriod");
  const nfacctValue = (counter: string) => async () => {
    const value = (await readNfacctCounters(runner))?.find((c) => c.name === counter)?.packets;
    return value === undefined ? null : Number(value);
  };
  const metrics = createProxyMetrics(registry, {
    mode: "iptables",
    nfacct: {
      ctStateInvalidDropped: nfacctValue(NFACCT_CT_STATE_INVALID_DROPPED_PKTS),
      localhostNodePortsAccepted: nfacctValue(NFACCT_LOCALHOST_NPS_ACCEPTED_PKTS),
    },
  });
  const health = new ProxyHealth(healthTimeoutForSyncPeriod(syncPeriodMs), clock);
  const stop = new AbortController();
  // Every loop, server, watch and back-off of the daemon listens on this one signal: more than
  // Node's default of 10 is expected, not a leak.
  setMaxListeners(64, stop.signal);
  const onSignal = (signal: string) => {
    log.info({ signal }, "Received signal, shutting down (rules stay in place)");
    stop.abort();
  };
  process.once("SIGTERM", () => onSignal("SIGTERM"));
  process.once("SIGINT", () => onSignal("SIGINT"));
  let configChanged = false;
  if (parts.configPath !== null) {
    watch(parts.configPath, { signal: stop.signal, persistent: false }, () => {
      if (configChanged) return;
      configChanged = true;
      log.error({ path: parts.configPath }, "Configuration file changed; exiting so that it is reloaded");
      stop.abort();
    });
  }

  // Objects arrive before the proxiers exist (we need the Node for IPs); queue them per family.
  let nodeObject: Node | null = null;
  const stores = new Map<IPFamily, ProxyStateStore>();
  for (const family of ipts.keys()) {
    stores.set(family, new ProxyStateStore({ family, nodeName, featureGates: config.featureGates }));
  }
  let synced!: () => void;
  const initialSync = new Promise<void>((resolve) => (synced = resolve));
  const proxiers = new Map<IPFamily, { proxier: IptablesProxier; runner: BoundedFrequencyRunner }>();
  const queue = (family: IPFamily) => {
    health.queuedUpdate(family);
    metrics.syncProxyRulesLastQueuedTimestamp.set({ ip_family: family }, clock.now() / 1000);
    proxiers.get(family)?.runner.run();
  };
  const sourceDone = source.start(
    {
      onService(previous: Service | null, current: Service | null) {
        for (const [family, store] of stores) {
          if (store.serviceChanges.update(previous, current)) queue(family);
        }
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
      onSynced() {
        synced();
      },
    },
    stop.signal,
  );
  await Promise.race([initialSync, sourceDone]);
  const node: NodeInfo = nodeInfoFromObject(nodeName, nodeObject);
  if (nodeObject === null)
    log.warn(
      { node: nodeName },
      "No Node object found for this node; using bindAddress or loopback as node IP",
    );

  await applyConntrackSysctls(config, log);
  const addresses = await localAddresses(runner);
  const liberal = (await readSysctl(CONNTRACK_TCP_BE_LIBERAL).catch(() => "0")).trim() !== "0";
  const version = await ipts.get("IPv4")!.version();
  const nfacct = {
    ctStateInvalidDroppedPkts: await ensureNfacctCounter(runner, NFACCT_CT_STATE_INVALID_DROPPED_PKTS),
    localhostNodePortsAcceptedPkts: await ensureNfacctCounter(runner, NFACCT_LOCALHOST_NPS_ACCEPTED_PKTS),
  };
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

  for (const [family, ipt] of ipts) {
    const settings = iptablesSettingsFor(config, node, family, {
      localAddresses: addresses,
      hasRandomFully: version.hasRandomFully,
      conntrackTCPLiberal: liberal,
      nfacct,
    });
    if (family === "IPv4" && settings.localhostNodePorts) await enableRouteLocalnet(config, log);
    const proxier = new IptablesProxier({
      ipt,
      settings,
      store: stores.get(family)!,
      clock,
      log: log.child({ ipFamily: family }),
      health,
      metrics,
      syncPeriodMs,
      maxServicesPerTransaction: maxServicesPerTransaction(parts.backend),
      ensureCounters: async () => {
        if (nfacct.ctStateInvalidDroppedPkts)
          await ensureNfacctCounter(runner, NFACCT_CT_STATE_INVALID_DROPPED_PKTS);
        if (nfacct.localhostNodePortsAcceptedPkts)
          await ensureNfacctCounter(runner, NFACCT_LOCALHOST_NPS_ACCEPTED_PKTS);
      },
      reconcileConntrack: async (state) => reconcileUdpConntrack(runner, family, udpConntrackModel(state)),
      onSync: (report, state) => onSynced(report, state),
    });
    const syncRunner = new BoundedFrequencyRunner(
      `sync-runner-${family}`,
      async () => {
        await proxier.syncProxyRules();
      },
      { minInterval: minSyncMs, retryInterval: syncPeriodMs, maxInterval: FULL_SYNC_PERIOD_MS },
      clock,
      { onError: () => undefined },
    );
    proxiers.set(family, { proxier, runner: syncRunner });
  }

  const onSynced = (report: SyncReport, state: ProxyState) => {
    if (!report.ok || report.family !== [...ipts.keys()][0]) return;
    const wanted = [...state.services.values()]
      .filter((sp) => sp.healthCheckNodePort !== 0)
      .map((sp) => ({ namespace: sp.name.namespace, name: sp.name.name, port: sp.healthCheckNodePort }));
    const counts = new Map<string, number>();
    for (const [key, sp] of state.services) {
      if (sp.healthCheckNodePort === 0) continue;
      const nsn = `${sp.name.namespace}/${sp.name.name}`;
      const ips = new Set(
        (state.endpoints.get(key) ?? []).filter((e) => e.isLocal && e.ready).map((e) => e.ip),
      );
      counts.set(nsn, Math.max(counts.get(nsn) ?? 0, ips.size));
    }
    void serviceHealth.sync(wanted).then(() => serviceHealth.syncEndpoints(counts));
  };

  if (parts.initOnly) {
    log.info("Initialization done (--init-only)");
    stop.abort();
    await sourceDone;
    return;
  }

  const servers: Promise<void>[] = [];
  const serve = (what: string, address: string, listen: () => Promise<HttpListener>) => {
    if (address === "") return;
    servers.push(
      keepServing(listen, {
        clock,
        signal: stop.signal,
        hardFail: config.bindAddressHardFail,
        onError: (err) => log.error({ err, address }, `Failed to start ${what} server`),
        onListening: () => log.info({ address }, `Serving ${what}`),
      }),
    );
  };
  serve("healthz", config.healthzBindAddress, () =>
    serveProxyHealth({ health, metrics }, config.healthzBindAddress),
  );
  serve("metrics", config.metricsBindAddress, () =>
    serveMetrics({ registry, proxyMode: config.mode, config }, config.metricsBindAddress),
  );
  serve("web view", parts.webBindAddress, () =>
    serveWeb(parts.webBindAddress, {
      source: kernelWebSource(runner, { iptables: [...ipts.values()] }),
      clock,
      onError: (err) => log.error({ err }, "Web view request failed"),
    }),
  );

  const loops: Promise<void>[] = [];
  for (const [family, { proxier, runner: syncRunner }] of proxiers) {
    proxier.setInitialized();
    health.updated(family);
    loops.push(syncRunner.loop(stop.signal));
    syncRunner.run();
    const monitor = startCanaryMonitor({
      ipt: ipts.get(family)!,
      tables: ["mangle", "nat", "filter"],
      intervalMs: syncPeriodMs,
      signal: stop.signal,
      log,
      onFlush: () => {
        log.info({ ipFamily: family }, "iptables canary deleted: forcing a full sync");
        proxier.forceFullSync();
        syncRunner.run();
      },
    });
    loops.push(monitor.done);
  }
  log.info({ node: nodeName, families: [...ipts.keys()] }, "kube-proxy-ts started");
  void parts.events?.eventf(nodeRef(nodeName), "Normal", "Starting", "StartKubeProxy", "");
  await Promise.all([sourceDone, ...loops, ...servers]);
  await serviceHealth.close();
  if (configChanged) {
    throw new InputError("--config", `content of ${parts.configPath} was updated; restart to apply it`);
  }
}

/** Upstream's start-up conntrack sysctls; a failure is logged, as a read-only /proc/sys is common. */
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
      log.error({ err, sysctl: sysctl.name, value: sysctl.value }, "Failed to set conntrack sysctl");
    }
  }
}

/** Localhost NodePorts need route_localnet (upstream sets it at start-up, spec §3.4). */
async function enableRouteLocalnet(config: Readonly<KubeProxyConfiguration>, log: Logger): Promise<void> {
  const npa = config.nodePortAddresses ?? [];
  const loopbackIncluded = npa.length === 0 || npa.some((c) => c.startsWith("127.") || c === "0.0.0.0/0");
  if (!loopbackIncluded) return;
  try {
    if ((await readSysctl(ROUTE_LOCALNET)).trim() !== "1") await writeSysctl(ROUTE_LOCALNET, 1);
  } catch (err) {
    log.error({ err }, "Failed to set route_localnet: localhost NodePorts will not work");
  }
}
