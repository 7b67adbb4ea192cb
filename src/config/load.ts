import { readFileSync } from "node:fs";
import { parseIP, parseNetwork } from "../ip.ts";
import { yaml } from "../yaml.ts";
import { z } from "zod";
import { ConfigError, InputError } from "../errors.ts";
import { intInRange } from "../k8s/objects.ts";
import { parseDuration } from "./duration.ts";
import { featureGateProblems } from "./features.ts";
import { applyFlags } from "./flags.ts";
import { defaultConfiguration, type KubeProxyConfiguration } from "./types.ts";

const duration = z.string();
const int32 = intInRange(-2147483648, 2147483647, "must be an int32 (-2147483648 to 2147483647)");

function section<T extends z.ZodRawShape>(shape: T, strict: boolean) {
  return (strict ? z.strictObject(shape) : z.looseObject(shape)).partial();
}

function fileSchema(strict: boolean) {
  return section(
    {
      apiVersion: z.literal("kubeproxy.config.k8s.io/v1alpha1"),
      kind: z.literal("KubeProxyConfiguration"),
      featureGates: z.record(z.string(), z.boolean()),
      clientConnection: section(
        {
          kubeconfig: z.string(),
          acceptContentTypes: z.string(),
          contentType: z.string(),
          qps: z.number(),
          burst: int32,
        },
        strict,
      ),
      logging: z.looseObject({ verbosity: int32.optional(), format: z.string().optional() }),
      hostnameOverride: z.string(),
      bindAddress: z.string(),
      healthzBindAddress: z.string(),
      metricsBindAddress: z.string(),
      bindAddressHardFail: z.boolean(),
      enableProfiling: z.boolean(),
      showHiddenMetricsForVersion: z.string(),
      mode: z.string(),
      iptables: section(
        {
          masqueradeBit: int32.nullable(),
          masqueradeAll: z.boolean(),
          localhostNodePorts: z.boolean().nullable(),
          snatNodeInternalIP: z.boolean().nullable(),
          syncPeriod: duration,
          minSyncPeriod: duration,
        },
        strict,
      ),
      ipvs: section(
        {
          syncPeriod: duration,
          minSyncPeriod: duration,
          scheduler: z.string(),
          excludeCIDRs: z.array(z.string()).nullable(),
          strictARP: z.boolean(),
          tcpTimeout: duration,
          tcpFinTimeout: duration,
          udpTimeout: duration,
        },
        strict,
      ),
      nftables: section(
        {
          masqueradeBit: int32.nullable(),
          masqueradeAll: z.boolean(),
          syncPeriod: duration,
          minSyncPeriod: duration,
        },
        strict,
      ),
      winkernel: z.looseObject({}),
      detectLocalMode: z.string(),
      detectLocal: section({ bridgeInterface: z.string(), interfaceNamePrefix: z.string() }, strict),
      clusterCIDR: z.string(),
      nodePortAddresses: z.array(z.string()).nullable(),
      oomScoreAdj: int32.nullable(),
      conntrack: section(
        {
          maxPerCore: int32.nullable(),
          min: int32.nullable(),
          tcpEstablishedTimeout: duration.nullable(),
          tcpCloseWaitTimeout: duration.nullable(),
          tcpBeLiberal: z.boolean(),
          udpTimeout: duration,
          udpStreamTimeout: duration,
        },
        strict,
      ),
      configSyncPeriod: duration,
      portRange: z.string(),
      windowsRunAsService: z.boolean(),
    },
    strict,
  );
}

export interface LoadedConfig {
  readonly config: Readonly<KubeProxyConfiguration>;
  readonly warnings: readonly string[];
}

/**
 * Reads a KubeProxyConfiguration file. Like upstream, a strict decode is tried first; unknown
 * fields then only cost a warning (lenient decode), wrong types are errors.
 */
export function readConfigFile(path: string): { config: KubeProxyConfiguration; warnings: string[] } {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (cause) {
    throw new InputError(path, `cannot read config file: ${(cause as Error).message}`, { cause });
  }
  let raw: unknown;
  try {
    raw = yaml().parse(text);
  } catch (cause) {
    const where =
      cause instanceof yaml().YAMLParseError && cause.linePos ? ` at line ${cause.linePos[0].line}` : "";
    throw new InputError(path, `invalid YAML${where}: ${(cause as Error).message.split("\n")[0]}`, { cause });
  }
  const warnings: string[] = [];
  const strict = fileSchema(true).safeParse(raw);
  let data: z.infer<ReturnType<typeof fileSchema>>;
  if (strict.success) {
    data = strict.data;
  } else {
    const lenient = fileSchema(false).safeParse(raw);
    if (!lenient.success)
      throw new ConfigError(lenient.error.issues.map((i) => `${path}: ${describeIssue(i)}`));
    warnings.push(
      `${path}: strict decoding failed, using lenient decoding: ${strict.error.issues.map(describeIssue).join("; ")}`,
    );
    data = lenient.data;
  }
  if (data.apiVersion === undefined || data.kind === undefined) {
    throw new ConfigError([
      `${path}: apiVersion kubeproxy.config.k8s.io/v1alpha1 and kind KubeProxyConfiguration are required`,
    ]);
  }
  return { config: mergeDefined(defaultConfiguration(), data), warnings };
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.join(".");
  return path === "" ? issue.message : `${path}: ${issue.message}`;
}

/** Overlays the fields present (and non-null) in `data` onto `base`, recursively. */
function mergeDefined<T>(base: T, data: unknown): T {
  if (data === null || typeof data !== "object" || Array.isArray(data)) return (data ?? base) as T;
  const out = { ...(base as Record<string, unknown>) };
  for (const [key, value] of Object.entries(data)) {
    if (value === null && key !== "nodePortAddresses" && key !== "excludeCIDRs") continue;
    const current = out[key];
    out[key] =
      current !== null && typeof current === "object" && !Array.isArray(current)
        ? mergeDefined(current, value)
        : value;
  }
  return out as T;
}

function validHostPort(value: string): boolean {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(value);
  if (match === null) return false;
  const host = match[1] ?? match[2] ?? "";
  const port = Number(match[3]);
  return (host === "" || parseIP(host) !== undefined) && port >= 0 && port <= 65535;
}

function validCIDR(value: string): boolean {
  return parseNetwork(value) !== undefined;
}

/** The IPVS schedulers upstream accepts ("" = rr). */
const IPVS_SCHEDULERS = ["", "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh"];

/** Every problem at once, as upstream's validation.go does (field paths as in the file). */
export function validateConfiguration(config: KubeProxyConfiguration): string[] {
  const problems: string[] = [];
  const check = (ok: boolean, message: string) => {
    if (!ok) problems.push(message);
  };
  check(
    ["iptables", "nftables", "ipvs"].includes(config.mode),
    `mode: unsupported value ${JSON.stringify(config.mode)} (iptables, nftables, ipvs)`,
  );
  check(
    ["ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"].includes(config.detectLocalMode),
    `detectLocalMode: unsupported value ${JSON.stringify(config.detectLocalMode)}`,
  );
  check(
    config.iptables.masqueradeBit >= 0 && config.iptables.masqueradeBit <= 31,
    "iptables.masqueradeBit: must be within [0, 31]",
  );
  check(
    config.nftables.masqueradeBit >= 0 && config.nftables.masqueradeBit <= 31,
    "nftables.masqueradeBit: must be within [0, 31]",
  );
  check(
    config.oomScoreAdj >= -1000 && config.oomScoreAdj <= 1000,
    "oomScoreAdj: must be within [-1000, 1000]",
  );
  problems.push(...featureGateProblems(config.featureGates));
  check(config.clientConnection.qps >= 0, "clientConnection.qps: must be greater than or equal to 0");
  check(config.clientConnection.burst >= 0, "clientConnection.burst: must be greater than or equal to 0");
  check(config.conntrack.maxPerCore >= 0, "conntrack.maxPerCore: must be greater than or equal to 0");
  check(config.conntrack.min >= 0, "conntrack.min: must be greater than or equal to 0");
  const durations: Array<[string, string, "positive" | "nonnegative"]> = [
    ["iptables.syncPeriod", config.iptables.syncPeriod, "positive"],
    ["iptables.minSyncPeriod", config.iptables.minSyncPeriod, "nonnegative"],
    ["nftables.syncPeriod", config.nftables.syncPeriod, "positive"],
    ["nftables.minSyncPeriod", config.nftables.minSyncPeriod, "nonnegative"],
    ["ipvs.syncPeriod", config.ipvs.syncPeriod, "positive"],
    ["ipvs.minSyncPeriod", config.ipvs.minSyncPeriod, "nonnegative"],
    ["ipvs.tcpTimeout", config.ipvs.tcpTimeout, "nonnegative"],
    ["ipvs.tcpFinTimeout", config.ipvs.tcpFinTimeout, "nonnegative"],
    ["ipvs.udpTimeout", config.ipvs.udpTimeout, "nonnegative"],
    ["configSyncPeriod", config.configSyncPeriod, "positive"],
    ["conntrack.tcpEstablishedTimeout", config.conntrack.tcpEstablishedTimeout, "nonnegative"],
    ["conntrack.tcpCloseWaitTimeout", config.conntrack.tcpCloseWaitTimeout, "nonnegative"],
    ["conntrack.udpTimeout", config.conntrack.udpTimeout, "nonnegative"],
    ["conntrack.udpStreamTimeout", config.conntrack.udpStreamTimeout, "nonnegative"],
  ];
  for (const [field, text, rule] of durations) {
    try {
      const ms = parseDuration(text, field);
      check(
        rule === "positive" ? ms > 0 : ms >= 0,
        `${field}: must be ${rule === "positive" ? "greater than 0" : "greater than or equal to 0"}`,
      );
    } catch (error) {
      problems.push(...(error as ConfigError).problems);
    }
  }
  if (config.mode === "ipvs") {
    // Upstream validateIPVSSchedulerMethod and validateIPVSExcludeCIDRs, checked in ipvs mode only.
    check(
      IPVS_SCHEDULERS.includes(config.ipvs.scheduler),
      `ipvs.scheduler: unsupported value ${JSON.stringify(config.ipvs.scheduler)} (${IPVS_SCHEDULERS.filter((s) => s !== "").join(", ")})`,
    );
    for (const [i, cidr] of (config.ipvs.excludeCIDRs ?? []).entries())
      check(
        parseNetwork(cidr) !== undefined,
        `ipvs.excludeCIDRs[${i}]: not a valid CIDR: ${JSON.stringify(cidr)}`,
      );
  }
  if (config.bindAddress !== "")
    check(
      parseIP(config.bindAddress) !== undefined,
      `bindAddress: not a valid IP address: ${JSON.stringify(config.bindAddress)}`,
    );
  if (config.healthzBindAddress !== "")
    check(
      validHostPort(config.healthzBindAddress),
      `healthzBindAddress: must be IP:port, got ${JSON.stringify(config.healthzBindAddress)}`,
    );
  if (config.metricsBindAddress !== "")
    check(
      validHostPort(config.metricsBindAddress),
      `metricsBindAddress: must be IP:port, got ${JSON.stringify(config.metricsBindAddress)}`,
    );
  const cidrs = config.clusterCIDR === "" ? [] : config.clusterCIDR.split(",").map((c) => c.trim());
  for (const cidr of cidrs) check(validCIDR(cidr), `clusterCIDR: invalid CIDR ${JSON.stringify(cidr)}`);
  check(cidrs.length <= 2, "clusterCIDR: at most one CIDR per IP family");
  const npa = config.nodePortAddresses ?? [];
  for (const item of npa) {
    check(
      item === "primary" || validCIDR(item),
      `nodePortAddresses: ${JSON.stringify(item)} is neither a CIDR nor "primary"`,
    );
  }
  check(
    !npa.includes("primary") || npa.length === 1,
    'nodePortAddresses: "primary" must be the only element',
  );
  if (config.detectLocalMode === "BridgeInterface") {
    check(
      config.detectLocal.bridgeInterface !== "",
      "detectLocal.bridgeInterface: required with detectLocalMode BridgeInterface",
    );
  }
  if (config.detectLocalMode === "InterfaceNamePrefix") {
    check(
      config.detectLocal.interfaceNamePrefix !== "",
      "detectLocal.interfaceNamePrefix: required with detectLocalMode InterfaceNamePrefix",
    );
  }
  for (const iface of [config.detectLocal.bridgeInterface, config.detectLocal.interfaceNamePrefix]) {
    check(
      iface === "" || /^[A-Za-z0-9_.:@-]{1,15}$/.test(iface),
      `detectLocal: invalid interface name ${JSON.stringify(iface)}`,
    );
  }
  return problems;
}

function deepFreeze<T>(value: T): Readonly<T> {
  if (value !== null && typeof value === "object") {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/**
 * Defaults, then the config file (with --config, upstream ignores the other flags except
 * logging verbosity and --hostname-override), else the flags; then validation of the result, every problem at once.
 */
export function resolveConfiguration(options: Record<string, unknown>): LoadedConfig {
  const warnings: string[] = [];
  let config = defaultConfiguration();
  const configPath = options["config"];
  if (typeof configPath === "string" && configPath !== "") {
    const loaded = readConfigFile(configPath);
    config = loaded.config;
    warnings.push(...loaded.warnings);
    if (typeof options["v"] === "number") config.logging.verbosity = options["v"];
    // Upstream's processHostnameOverrideFlag: the flag wins over the file.
    const hostnameOverride = options["hostnameOverride"];
    if (typeof hostnameOverride === "string" && hostnameOverride.trim() !== "") {
      config.hostnameOverride = hostnameOverride.trim();
    }
  } else {
    applyFlags(config, options);
  }
  const problems = validateConfiguration(config);
  if (problems.length > 0) throw new ConfigError(problems);
  return { config: deepFreeze(config), warnings };
}
