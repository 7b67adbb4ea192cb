/**
 * The transactions whose netlink encoding is compared byte for byte with what nft 1.0.6 sends
 * for the same text (test/fixtures/nftables/netlink/, recorded by record.ts there): upstream's
 * overall golden, an IPv6 table with every Service variant, and the rarer shapes in both families
 * (interface detectors, match-all NodePorts, several source ranges with the node inside one,
 * UDP and SCTP, masquerade-all).
 */
import { readFileSync } from "node:fs";
import { renderNftables } from "../../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../../src/backends/nftables/settings.ts";
import { planFullSync, type NftCommand } from "../../src/backends/nftables/transactions.ts";
import type { NftablesSettings } from "../../src/backends/nftables/types.ts";
import type { IPFamily } from "../../src/ip.ts";
import type { ProxyState } from "../../src/proxy/types.ts";
import { endpoint, proxyState, servicePort } from "./iptables-builders.ts";
import { loadNftablesState } from "./nftables-golden.ts";
import { stateOf, type ServiceVariant } from "./nftables-states.ts";

export interface NetlinkCase {
  readonly name: string;
  readonly family: "ip" | "ip6";
  readonly commands: readonly NftCommand[];
  /** The same transaction as `nft -f` text. */
  readonly payload: string;
}

const FIXTURES = new URL("../fixtures/nftables/", import.meta.url);

function full(name: string, state: ProxyState, settings: NftablesSettings): NetlinkCase {
  const plan = planFullSync(renderNftables({ state, settings }), null, { resetBaseChains: true });
  return {
    name,
    family: settings.family === "IPv4" ? "ip" : "ip6",
    commands: plan.commands,
    payload: plan.payload,
  };
}

const every: ServiceVariant[] = [
  {
    nodePort: true,
    externalIP: true,
    lb: true,
    sourceRanges: true,
    affinity: true,
    externalLocal: true,
    internalLocal: false,
    endpoints: [
      { host: 1, local: true, ready: true },
      { host: 2, local: false, ready: true },
    ],
  },
  {
    nodePort: true,
    externalIP: false,
    lb: false,
    sourceRanges: false,
    affinity: false,
    externalLocal: false,
    internalLocal: true,
    endpoints: [{ host: 3, local: false, ready: true }],
  },
  {
    nodePort: false,
    externalIP: true,
    lb: true,
    sourceRanges: false,
    affinity: false,
    externalLocal: true,
    internalLocal: false,
    endpoints: [],
  },
  {
    nodePort: true,
    externalIP: false,
    lb: false,
    sourceRanges: false,
    affinity: true,
    externalLocal: false,
    internalLocal: false,
    endpoints: [
      { host: 4, local: true, ready: false },
      { host: 5, local: true, ready: true },
    ],
  },
];

function rareShapes(family: IPFamily): NetlinkCase {
  const v6 = family === "IPv6";
  const base = upstreamTestSettings(family);
  const settings: NftablesSettings = {
    ...base,
    localDetector: { mode: "InterfaceNamePrefix", prefix: "veth" },
    nodePortAddresses: [],
    masqueradeAll: true,
    serviceCIDRs: v6 ? ["fd00:10:96::/112", "fd00:20:96::/112"] : ["172.30.0.0/16", "172.31.0.0/16"],
  };
  const sp = (i: number, protocol: "TCP" | "UDP" | "SCTP", ranges: string[]) =>
    servicePort({
      namespace: "ns",
      name: `svc${i}`,
      portName: "p",
      protocol,
      port: 53,
      clusterIP: v6 ? `fd00:10:96::${i}` : `172.30.1.${i}`,
      nodePort: 3100 + i,
      loadBalancerVIPs: [v6 ? `2001:db8:1b::${i}` : `1.2.4.${i}`],
      loadBalancerSourceRanges: ranges,
      externalPolicyLocal: i === 2,
    });
  const ep = (n: number) => endpoint(v6 ? `fd00:10::${n}` : `10.181.0.${n}`, 5353, { isLocal: n % 2 === 0 });
  const inRange = v6 ? ["2001:db8::/64", "2001:db8:f::/64"] : ["192.168.0.0/24", "203.0.113.0/25"];
  const state = proxyState(
    [
      [sp(1, "UDP", inRange), [ep(1), ep(2)]],
      [sp(2, "SCTP", v6 ? ["2001:db8:e::/48"] : ["198.51.100.0/22"]), [ep(3), ep(4)]],
      [sp(3, "TCP", []), []],
    ],
    { family },
  );
  const bridge: NftablesSettings = {
    ...settings,
    localDetector: { mode: "BridgeInterface", interfaceName: "lo" },
  };
  const a = full(`rare-${family}`, state, settings);
  const b = full(`rare-bridge-${family}`, state, bridge);
  return {
    name: a.name,
    family: a.family,
    commands: [...a.commands, ...b.commands.slice(1)],
    payload: a.payload + b.payload.split("\n").slice(1).join("\n"),
  };
}

export function netlinkCases(): NetlinkCase[] {
  const v4 = upstreamTestSettings("IPv4");
  const overall = loadNftablesState(
    readFileSync(new URL("OverallNFTablesRules.yaml", FIXTURES), "utf8"),
    "OverallNFTablesRules.yaml",
    v4,
  );
  return [
    full("overall", overall, v4),
    full("every-variant-IPv6", stateOf(every, "IPv6"), upstreamTestSettings("IPv6")),
    rareShapes("IPv4"),
    rareShapes("IPv6"),
  ];
}
