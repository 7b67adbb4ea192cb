/**
 * The parts of a Service's explanation in words that every mode prints the same way, from the
 * mode-neutral view (src/inspect/model.ts): its frontends, then its endpoints with their share of
 * new connections and where traffic is marked for masquerade. A mode prints its own header and
 * walk between the two.
 */
import type { Counters, ServiceView } from "../inspect/model.ts";
import { formatPercent } from "./tracer.ts";

export function countersText(c: Counters | undefined): string {
  return c === undefined ? "" : ` [${c.packets} pkts, ${c.bytes} bytes]`;
}

/** `frontends:` and one entry per frontend: where traffic enters, what happens to it, where. */
export function frontendLines(view: ServiceView): string[] {
  const lines = ["frontends:"];
  if (view.frontends.length === 0) lines.push("  (none)");
  for (const f of view.frontends) {
    const reason = f.reason === undefined ? "" : ` (${f.reason})`;
    lines.push(
      `  ${f.servicePortName} ${f.destination.startsWith(f.kind) ? "" : `${f.kind} `}${f.destination}: ${f.action}${reason}${countersText(f.counters)}`,
    );
    lines.push(`      ${f.where}`);
    if (f.allowedSources !== undefined)
      lines.push(`      allowed sources: ${f.allowedSources.join(", ") || "none"}`);
  }
  return lines;
}

/** The endpoints with their shares and paths, then the rules that mark for masquerade. */
export function endpointAndMasqueradeLines(view: ServiceView): string[] {
  const lines = ["endpoints (share of new connections):"];
  if (view.endpoints.length === 0) lines.push("  (none)");
  for (const e of view.endpoints) {
    lines.push(`  ${e.servicePortName} ${e.endpoint} ${formatPercent(e.share)}${countersText(e.counters)}`);
    lines.push(`      via ${e.via.join(" → ")}`);
  }
  lines.push("", "marked for masquerade:");
  if (view.masquerade.length === 0) lines.push("  (never)");
  for (const m of view.masquerade) lines.push(`  ${m.where}${countersText(m.counters)}`);
  return lines;
}

/** `conntrack entries per endpoint:` and one line per endpoint (`explain --conntrack`). */
export function flowLines(
  flows: readonly { servicePortName: string; endpoint: string; protocol: string; flows: number }[],
): string[] {
  const lines = ["conntrack entries per endpoint:"];
  if (flows.length === 0) lines.push("  (no endpoints)");
  for (const f of flows) lines.push(`  ${f.servicePortName} ${f.endpoint}/${f.protocol}: ${f.flows}`);
  return lines;
}
