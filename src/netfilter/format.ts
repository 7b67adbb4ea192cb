import type { IPFamily } from "../ip.ts";
import { formatCIDR } from "../ip.ts";
import type { Match, Rule } from "./model.ts";

/** `iptables -vnL` counter style: exact up to 99999, then K/M/G/T. */
export function humanCount(n: number): string {
  if (n <= 99999) return String(n);
  const units = ["K", "M", "G", "T"];
  let value = Math.floor((n + 500) / 1000);
  let unit = 0;
  while (value > 9999 && unit < units.length - 1) {
    value = Math.floor((value + 500) / 1000);
    unit++;
  }
  return `${value}${units[unit]}`;
}

function ports(ranges: readonly (readonly [number, number])[]): string {
  return ranges.map(([lo, hi]) => (lo === hi ? String(lo) : `${lo}:${hi}`)).join(",");
}

function matchExtra(m: Match): string | undefined {
  const bang = "negated" in m && m.negated ? "!" : "";
  switch (m.kind) {
    case "comment":
      return `/* ${m.text} */`;
    case "sourcePort":
    case "destinationPort": {
      const side = m.kind === "sourcePort" ? "spt" : "dpt";
      const single = m.ranges.length === 1 && m.ranges[0]?.[0] === m.ranges[0]?.[1];
      return m.ranges.length > 1
        ? `multiport ${side}s ${bang}${ports(m.ranges)}`
        : `${side}${single ? "" : "s"}:${bang}${ports(m.ranges)}`;
    }
    case "mark":
      return `mark match ${bang === "" ? "" : "! "}0x${m.value.toString(16)}/0x${m.mask.toString(16)}`;
    case "ctstate":
      return `${bang === "" ? "" : "! "}ctstate ${m.states.join(",")}`;
    case "addrtype":
      return `ADDRTYPE match ${m.side}-type ${bang}${m.types.join(",")}`;
    case "probability":
      return `statistic mode random probability ${m.probability.toFixed(11)}`;
    case "recent":
      return `${bang === "" ? "" : "! "}recent: ${m.command.toUpperCase()}${m.seconds === undefined ? "" : ` seconds: ${m.seconds}`} name: ${m.name}`;
    case "accounting":
      return m.module;
    case "unknown":
    case "set":
    case "ipvs":
    case "physdev":
      return m.text;
    default:
      return undefined;
  }
}

/** The target column (chain name or target) as iptables -L prints it. */
export function targetName(rule: Rule): string {
  const t = rule.target;
  if (t === undefined) return "";
  switch (t.kind) {
    case "verdict":
      return t.verdict;
    case "return":
      return "RETURN";
    case "jump":
    case "goto":
      return t.chain;
    case "dnat":
      return "DNAT";
    case "snat":
      return "SNAT";
    case "masquerade":
      return "MASQUERADE";
    case "mark":
      return "MARK";
    case "continue":
    case "unknown":
      return t.name;
  }
}

function targetExtra(rule: Rule): string | undefined {
  const t = rule.target;
  if (t === undefined) return undefined;
  switch (t.kind) {
    case "dnat":
      return `to:${t.to}`;
    case "snat":
      return `to:${t.to}`;
    case "goto":
      return "[goto]";
    case "mark":
      return t.mask === t.value
        ? `MARK or 0x${t.value.toString(16)}`
        : t.mask === 0
          ? `MARK xor 0x${t.value.toString(16)}`
          : `MARK xset 0x${t.value.toString(16)}/0x${t.mask.toString(16)}`;
    case "verdict":
    case "masquerade":
    case "continue":
    case "unknown": {
      const rest = t.text.split(" ").slice(1).join(" ");
      return rest === "" ? undefined : rest;
    }
    default:
      return undefined;
  }
}

function columns(values: readonly string[]): string {
  const [
    num = "",
    pkts = "",
    bytes = "",
    target = "",
    prot = "",
    opt = "",
    inIf = "",
    outIf = "",
    src = "",
    dst = "",
    extra = "",
  ] = values;
  return [
    num.padStart(4),
    pkts.padStart(6),
    bytes.padStart(5),
    target.padEnd(26),
    prot.padEnd(4),
    opt.padEnd(3),
    inIf.padEnd(6),
    outIf.padEnd(7),
    src.padEnd(20),
    dst.padEnd(20),
    extra,
  ]
    .join(" ")
    .trimEnd();
}

/** Column titles matching {@link formatRuleColumns}. */
export const COLUMN_HEADER = columns([
  "num",
  "pkts",
  "bytes",
  "target",
  "prot",
  "opt",
  "in",
  "out",
  "source",
  "destination",
]);

/** One rule in `iptables -vnL --line-numbers` columns. */
export function formatRuleColumns(rule: Rule, family: IPFamily): string {
  const any = family === "IPv6" ? "::/0" : "0.0.0.0/0";
  let prot = "all";
  let inIf = "*";
  let outIf = "*";
  let src = any;
  let dst = any;
  const extra: string[] = [];
  let protoShown: string | undefined;
  for (const m of rule.matches) {
    const bang = "negated" in m && m.negated ? "!" : "";
    switch (m.kind) {
      case "protocol":
        prot = bang + m.protocol;
        protoShown = m.protocol;
        break;
      case "source":
      case "destination": {
        const full = m.cidr.prefix === (m.cidr.family === "IPv4" ? 32 : 128);
        const text = bang + (full ? formatCIDR(m.cidr).replace(/\/\d+$/, "") : formatCIDR(m.cidr));
        if (m.kind === "source") src = text;
        else dst = text;
        break;
      }
      case "inInterface":
        inIf = bang + m.name;
        break;
      case "outInterface":
        outIf = bang + m.name;
        break;
      case "sourcePort":
      case "destinationPort": {
        const text = matchExtra(m) as string;
        extra.push(text.startsWith("multiport") ? text : `${protoShown ?? ""} ${text}`.trim());
        break;
      }
      default: {
        const text = matchExtra(m);
        if (text !== undefined) extra.push(text);
      }
    }
  }
  const t = targetExtra(rule);
  if (t !== undefined) extra.push(t);
  const pkts = rule.counters === undefined ? "-" : humanCount(rule.counters.packets);
  const bytes = rule.counters === undefined ? "-" : humanCount(rule.counters.bytes);
  return columns([
    String(rule.index),
    pkts,
    bytes,
    targetName(rule),
    prot,
    "--",
    inIf,
    outIf,
    src,
    dst,
    extra.join(" "),
  ]);
}
