/** iptables mode's explanation of one Service as the mode-neutral `ServiceView`. */
import type { FrontendAction, FrontendKind, FrontendView, ServiceView } from "../../inspect/model.ts";
import { formatCIDR } from "../../ip.ts";
import type { ExplainedRule, ServiceExplanation } from "../../netfilter/explain.ts";
import type { Match, Rule } from "../../netfilter/model.ts";

export function matchOf<K extends Match["kind"]>(
  rule: Rule,
  kind: K,
): (Match & { readonly kind: K }) | undefined {
  return rule.matches.find((m): m is Match & { readonly kind: K } => m.kind === kind);
}

/** What a filter or capture rule catches, in words: `10.1.0.27:80`, `node port 31004`. */
function destinationOf(rule: Rule): string {
  const dst = matchOf(rule, "destination");
  const port = matchOf(rule, "destinationPort")?.ranges[0]?.[0];
  const proto = matchOf(rule, "protocol")?.protocol;
  const portText = port === undefined ? "" : `:${port}`;
  const suffix = proto === undefined ? "" : ` (${proto})`;
  if (dst !== undefined) {
    const full = dst.cidr.prefix === (dst.cidr.family === "IPv4" ? 32 : 128);
    const addr = full ? formatCIDR(dst.cidr).replace(/\/\d+$/, "") : formatCIDR(dst.cidr);
    return `${dst.cidr.family === "IPv6" && port !== undefined ? `[${addr}]` : addr}${portText}${suffix}`;
  }
  if (matchOf(rule, "addrtype")?.types.includes("LOCAL") === true && port !== undefined)
    return `node port ${port}${suffix} on any local address`;
  return `this Service${suffix}`;
}

function where(rule: ExplainedRule): string {
  return `${rule.table} ${rule.chain} rule ${rule.ruleNumber}`;
}

function actionOf(rule: Rule): FrontendAction {
  const t = rule.target;
  if (t?.kind !== "verdict") return "load-balance";
  return t.verdict === "REJECT" ? "reject" : t.verdict === "DROP" ? "drop" : "accept";
}

/** Which frontend a rule guards; filter rules name it by chain and matches, not by comment. */
function kindOf(r: ExplainedRule): FrontendKind {
  switch (r.role) {
    case "cluster IP":
    case "external IP":
    case "loadbalancer IP":
    case "node port":
    case "health check node port":
      return r.role;
    case "firewall drop":
      return "loadbalancer IP";
    default:
      if (matchOf(r.rule, "addrtype")?.types.includes("LOCAL") === true || r.chain === "KUBE-NODEPORTS")
        return "node port";
      return r.chain === "KUBE-SERVICES" ? "cluster IP" : "external address";
  }
}

function frontendOf(ex: ServiceExplanation, r: ExplainedRule): FrontendView {
  const base = {
    servicePortName: r.servicePortName ?? ex.service,
    kind: kindOf(r),
    destination: destinationOf(r.rule),
    action: actionOf(r.rule),
    where: where(r),
    ...(r.counters === undefined ? {} : { counters: r.counters }),
  };
  switch (r.role) {
    case "no endpoints":
    case "no local endpoints":
      return { ...base, reason: r.role };
    case "firewall drop": {
      const fw = /traffic not accepted by (KUBE-FW-\S+)/.exec(matchOf(r.rule, "comment")?.text ?? "")?.[1];
      const chain = ex.chains.find((c) => c.name === fw);
      const sources = (chain?.rules ?? [])
        .map((x) => matchOf(x.rule, "source"))
        .filter((m) => m !== undefined)
        .map((m) => formatCIDR(m.cidr));
      return {
        ...base,
        reason: "source not allowed",
        allowedSources: sources,
        ...(fw === undefined ? {} : { allowedSourcesWhere: `nat ${fw}` }),
      };
    }
    default:
      return base;
  }
}

export function iptablesServiceView(ex: ServiceExplanation): ServiceView {
  return {
    mode: "iptables",
    service: ex.service,
    servicePortNames: ex.servicePortNames,
    frontends: [...ex.entries, ...ex.filter].map((r) => frontendOf(ex, r)),
    endpoints: ex.endpoints.map((e) => ({
      servicePortName: e.servicePortName,
      endpoint: e.endpoint,
      share: e.probability,
      via: [`nat ${e.viaChain}`, `nat ${e.sepChain}`],
      ...(e.counters === undefined ? {} : { counters: e.counters }),
    })),
    masquerade: ex.masquerade.map((r) => ({
      where: where(r),
      ...(r.counters === undefined ? {} : { counters: r.counters }),
    })),
  };
}
