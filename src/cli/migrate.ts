/**
 * `kube-proxy-ts migrate --from ipvs --to nftables`: what changes per Service when a node moves
 * from ipvs mode to nftables mode (src/backends/ipvs/migrate.ts). The Services come from
 * `-f`/`--manifests` or `--api`; `--live` also reads this node's kernel (the IPVS table's real
 * schedulers and persistence, the ARP sysctls, the IPVS timeouts, the interface addresses).
 */
import { migrationReport, formatMigrationReport, type LiveIpvs } from "../backends/ipvs/migrate.ts";
import { renderIpvs } from "../backends/ipvs/render.ts";
import { ipvsSettingsFor, nodeAddressesOf } from "../backends/ipvs/settings.ts";
import { parseDuration } from "../config/duration.ts";
import { resolveConfiguration } from "../config/load.ts";
import { nodeName } from "../config/node.ts";
import { InputError } from "../errors.ts";
import { familyOf, type IPFamily } from "../ip.ts";
import { ENDPOINT_SLICES, KubeClient, NODES, SERVICES } from "../k8s/client.ts";
import { buildRestConfig } from "../k8s/kubeconfig.ts";
import { ProcessRunner, type Runner } from "../kernel/exec.ts";
import { localAddresses as readLocalAddresses } from "../kernel/ip.ts";
import { parseIpvsadmList } from "../kernel/ipvs.ts";
import { readSysctl } from "../kernel/sysctl.ts";
import { nodeInfoFromObject, primaryNodeIP } from "../proxy/node.ts";
import { buildProxyState } from "../proxy/state.ts";
import { parseManifests, readManifestPaths, type ManifestObjects } from "../source/manifests.ts";

const typed = (items: readonly unknown[], kind: string, apiVersion: string) =>
  items.map((item) => ({ ...(item as object), kind, apiVersion }));

async function apiObjects(options: Record<string, unknown>, runner: Runner): Promise<ManifestObjects> {
  const { config } = resolveConfiguration(options);
  const master = options["master"];
  const rest = await buildRestConfig(
    { kubeconfig: config.clientConnection.kubeconfig, ...(typeof master === "string" ? { master } : {}) },
    { runner },
  );
  const client = new KubeClient(rest, { qps: 0 });
  const [services, slices, nodes] = await Promise.all([
    client.listAll(SERVICES, {}),
    client.listAll(ENDPOINT_SLICES, {}),
    client.listAll(NODES, { fieldSelector: `metadata.name=${nodeName(config)}` }),
  ]);
  const items = [
    ...typed(services.items, "Service", "v1"),
    ...typed(slices.items, "EndpointSlice", "discovery.k8s.io/v1"),
    ...typed(nodes.items, "Node", "v1"),
  ];
  return parseManifests(JSON.stringify({ apiVersion: "v1", kind: "List", items }), "the API server");
}

/** `Timeout (tcp tcpfin udp): 900 120 300` → [900, 120, 300]. */
export function parseIpvsTimeouts(text: string): [number, number, number] | null {
  const m = /Timeout \(tcp tcpfin udp\):\s*(\d+)\s+(\d+)\s+(\d+)/.exec(text);
  return m === null ? null : [Number(m[1]), Number(m[2]), Number(m[3])];
}

async function readLive(runner: Runner): Promise<{ live: LiveIpvs; addresses: string[] }> {
  const list = parseIpvsadmList(
    (await runner.run(["ipvsadm", "-Ln", "--exact"], { timeoutMs: 30_000 })).stdout,
  );
  const timeouts = parseIpvsTimeouts(
    (await runner.run(["ipvsadm", "-L", "--timeout"], { timeoutMs: 10_000 })).stdout,
  );
  const sysctl = async (name: string) => {
    const v = Number(await readSysctl(name).catch(() => "NaN"));
    return Number.isNaN(v) ? null : v;
  };
  const virtualServers = new Map(
    list.map((vs) => [
      `${vs.protocol}:${vs.address.includes(":") ? `[${vs.address}]` : vs.address}:${vs.port}`,
      { scheduler: vs.scheduler, persistence: vs.persistence },
    ]),
  );
  return {
    live: {
      virtualServers,
      arpIgnore: await sysctl("net/ipv4/conf/all/arp_ignore"),
      arpAnnounce: await sysctl("net/ipv4/conf/all/arp_announce"),
      timeouts,
    },
    addresses: await readLocalAddresses(runner),
  };
}

export async function migrateCommand(options: Record<string, unknown>, runner: Runner = new ProcessRunner()) {
  if (options["from"] !== "ipvs" || options["to"] !== "nftables") {
    throw new InputError("migrate", "only --from ipvs --to nftables is supported");
  }
  const format = options["output"] ?? "text";
  if (format !== "text" && format !== "json")
    throw new InputError("--output", `must be text or json, not ${String(format)}`);
  const { config } = resolveConfiguration(options);
  const files = [...((options["filename"] as string[] | undefined) ?? [])];
  if (typeof options["manifests"] === "string") files.push(options["manifests"]);
  let objects: ManifestObjects;
  let source: string;
  if (options["api"] === true) {
    objects = await apiObjects(options, runner);
    source = "Services from the API server";
  } else if (files.length > 0) {
    objects = await readManifestPaths(files);
    source = `Services from ${files.join(", ")}`;
  } else {
    throw new InputError("migrate", "give the Services with -f/--manifests or --api");
  }
  if (objects.problems.length > 0) {
    throw new InputError("migrate", objects.problems.map((p) => p.message).join("; "));
  }
  const name = nodeName(config);
  const nodeObject = objects.nodes.find((n) => n.metadata.name === name) ?? null;
  const node = nodeInfoFromObject(name, nodeObject);
  let live: LiveIpvs | null = null;
  let addresses = ["127.0.0.1/8", "::1/128", ...node.ips];
  if (options["live"] === true) {
    const read = await readLive(runner);
    live = read.live;
    addresses = read.addresses;
    source += ", with this node's live IPVS table and sysctls";
  }
  const families = new Map();
  const nodeAddresses: string[] = [];
  const primaryNodeIPs: string[] = [];
  for (const family of ["IPv4", "IPv6"] as IPFamily[]) {
    const { state } = buildProxyState(
      { services: objects.services, endpointSlices: objects.endpointSlices, node: nodeObject },
      { family, nodeName: name, featureGates: config.featureGates },
    );
    if (state.services.size === 0) continue;
    const settings = ipvsSettingsFor(config, node, family, addresses, true);
    const famAddresses = nodeAddressesOf(addresses, family);
    nodeAddresses.push(...famAddresses);
    const primary = primaryNodeIP(config, node, family);
    if (familyOf(primary) === family && primary !== "127.0.0.1" && primary !== "::1")
      primaryNodeIPs.push(primary);
    families.set(family, {
      state,
      desired: renderIpvs({
        state,
        settings,
        nodeAddresses: famAddresses,
        featureGates: config.featureGates,
      }),
    });
  }
  const report = migrationReport({
    source,
    families,
    nodeName: name,
    scheduler: config.ipvs.scheduler === "" ? "rr" : config.ipvs.scheduler,
    strictARP: config.ipvs.strictARP,
    nodePortAddresses: config.nodePortAddresses,
    nodeAddresses,
    primaryNodeIPs,
    conntrackTCPEstablishedSeconds: Math.floor(
      parseDuration(config.conntrack.tcpEstablishedTimeout, "conntrack.tcpEstablishedTimeout") / 1000,
    ),
    ipvsTimeouts: [config.ipvs.tcpTimeout, config.ipvs.tcpFinTimeout, config.ipvs.udpTimeout].map((t) =>
      Math.floor(parseDuration(t, "ipvs timeout") / 1000),
    ) as [number, number, number],
    live,
  });
  return format === "json" ? JSON.stringify(report, null, 2) + "\n" : formatMigrationReport(report);
}
