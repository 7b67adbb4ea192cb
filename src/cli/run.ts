import { writeFileSync } from "node:fs";
import { collectDefaultMetrics, Registry } from "prom-client";
import { backendFor, MODES } from "../backends/index.ts";
import { resolveConfiguration } from "../config/load.ts";
import { nodeName as resolveNodeName } from "../config/node.ts";
import { cleanupAllModes, runDaemon } from "../daemon/daemon.ts";
import { EventRecorder } from "../k8s/events.ts";
import { KubeClient } from "../k8s/client.ts";
import { buildRestConfig } from "../k8s/kubeconfig.ts";
import { ProcessRunner } from "../kernel/exec.ts";
import { InputError } from "../errors.ts";
import { createLogger } from "../log.ts";
import { yaml } from "../yaml.ts";
import { checkWebBindAddress } from "../server/web.ts";
import { ApiServerSource } from "../source/apiserver.ts";
import { DirectorySource } from "../source/directory.ts";
import type { Source } from "../source/types.ts";

/** `kube-proxy-ts [run]`: the daemon, or one of its one-shot modes (--cleanup, --write-config-to). */
export async function runDaemonCommand(options: Record<string, unknown>): Promise<void> {
  const { config, warnings } = resolveConfiguration(options);
  const webBindAddress = typeof options["webBindAddress"] === "string" ? options["webBindAddress"] : "";
  if (webBindAddress !== "") checkWebBindAddress(webBindAddress, options["webAllowRemote"] === true);
  const log = createLogger(config.logging.verbosity);
  for (const warning of warnings) log.warn(warning);
  const writeTo = options["writeConfigTo"];
  if (typeof writeTo === "string") {
    try {
      writeFileSync(writeTo, yaml().stringify(config));
    } catch (cause) {
      // A full disk, a read-only or missing folder: the user's mistake or the node's, not a bug.
      throw new InputError("--write-config-to", `cannot write ${writeTo}: ${(cause as Error).message}`, {
        cause,
      });
    }
    log.info({ path: writeTo }, "Wrote configuration");
    return;
  }
  const runner = new ProcessRunner();
  if (options["cleanup"] === true) return cleanupAllModes({ config, runner, log }, MODES);
  const backend = await backendFor(config.mode);

  const registry = new Registry();
  // Upstream's /metrics carries the process collector (process_resident_memory_bytes,
  // process_open_fds, …) and the runtime's heap figures; these are prom-client's equivalents.
  collectDefaultMetrics({ register: registry });
  const manifests = options["manifests"];
  const name = resolveNodeName(config);
  let source: Source;
  let client: KubeClient | null = null;
  let events: EventRecorder | null = null;
  if (typeof manifests === "string") {
    source = new DirectorySource(manifests, name, log);
  } else {
    const master = options["master"];
    const restConfig = await buildRestConfig(
      {
        kubeconfig: config.clientConnection.kubeconfig,
        ...(typeof master === "string" ? { master } : {}),
      },
      { runner },
    );
    log.info({ server: restConfig.server, origin: restConfig.origin }, "Using the API server");
    client = new KubeClient(restConfig, {
      qps: config.clientConnection.qps,
      burst: config.clientConnection.burst,
    });
    source = new ApiServerSource({ client, nodeName: name, log, registry });
    events = new EventRecorder(client, name, log);
  }
  const stop = new AbortController();
  const onSignal = (signal: string) => {
    log.info({ signal }, "Received signal, shutting down (rules stay in place)");
    stop.abort();
  };
  process.once("SIGTERM", () => onSignal("SIGTERM"));
  process.once("SIGINT", () => onSignal("SIGINT"));
  const configPath = options["config"];
  try {
    await runDaemon({
      config,
      log,
      runner,
      backend,
      source,
      events,
      registry,
      nodeName: name,
      configPath: typeof configPath === "string" && configPath !== "" ? configPath : null,
      initOnly: options["initOnly"] === true,
      serviceCIDRFallback: (options["serviceClusterIpRange"] as string[] | undefined) ?? [],
      webBindAddress,
      stop,
    });
  } finally {
    stop.abort();
    client?.close();
  }
}
