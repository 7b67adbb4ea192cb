/**
 * Drift: how what the kernel holds differs from what the proxy would write now, whatever the
 * mode. A mode compares its own objects (iptables: chains and their rules; nftables: chains,
 * sets and maps with their rules and elements; ipvs: virtual servers with their real servers,
 * ipsets with their members, its chains, kube-ipvs0's addresses) and reports them per Service;
 * objects that are not the proxy's are listed as foreign and never count as drift.
 * `kube-proxy-ts diff`, the daemon's full syncs and its `/debug/kube-proxy-ts/diff` endpoint
 * all produce this report.
 */
import type { ProxyMode } from "../config/types.ts";
import type { IPFamily } from "../ip.ts";

export type DriftChange = "missing" | "extra" | "changed";

/** One of the proxy's objects that differs: missing in the kernel, extra there, or changed. */
export interface ObjectDrift {
  /** `chain` in iptables; `chain`, `set` or `map` in nftables; `virtual-server`, `ipset`, `chain` or `interface` in ipvs. */
  readonly kind: string;
  readonly table: string;
  readonly name: string;
  readonly change: DriftChange;
  /** Rules (or elements) the proxy would write that the kernel lacks. */
  readonly missing: readonly string[];
  /** Rules (or elements) in the kernel the proxy would not write. */
  readonly extra: readonly string[];
  /** Changed only in order: the same rules, in another sequence. */
  readonly reordered: boolean;
}

export interface ServiceDrift {
  /** `namespace/name`; null for the node-level objects (entry chains, masquerading, jumps). */
  readonly service: string | null;
  readonly objects: readonly ObjectDrift[];
}

/** Something in the kernel that is not the proxy's: reported, never touched, never drift. */
export interface ForeignObject {
  readonly kind: string;
  readonly table: string;
  readonly name: string;
  /** A foreign rule inside a chain the proxy also uses (a built-in chain); absent for a whole object. */
  readonly rule?: string;
}

export interface DriftReport {
  readonly mode: ProxyMode;
  readonly family: IPFamily;
  readonly inSync: boolean;
  /** Missing and extra objects, plus missing and extra rules of changed objects (a reordered object counts once). */
  readonly differences: number;
  /** Only the Services (and the node level) that drifted; node level first, then by name. */
  readonly services: readonly ServiceDrift[];
  readonly foreign: readonly ForeignObject[];
}

/** What the drift of one object counts for (`DriftReport.differences`). */
export function objectDifferences(o: ObjectDrift): number {
  if (o.change !== "changed") return 1;
  const rules = o.missing.length + o.extra.length;
  return rules === 0 ? 1 : rules;
}

const CHANGE_WORD: Readonly<Record<DriftChange, string>> = {
  missing: "missing from the kernel",
  extra: "in the kernel but not written by the proxy",
  changed: "changed",
};

/** The report in words, one block per Service, then the foreign objects. */
export function formatDrift(report: DriftReport): string {
  const lines: string[] = [];
  const head = `${report.mode} ${report.family}:`;
  lines.push(
    report.inSync
      ? `${head} in sync (the kernel holds what the proxy would write)`
      : `${head} ${report.differences} difference(s) in ${report.services.length} place(s)`,
  );
  for (const s of report.services) {
    lines.push(`  ${s.service === null ? "node-level chains" : `Service ${s.service}`}:`);
    for (const o of s.objects) {
      const order = o.reordered ? " (same rules, other order)" : "";
      lines.push(`    ${o.kind} ${o.table} ${o.name}: ${CHANGE_WORD[o.change]}${order}`);
      for (const r of o.missing) lines.push(`      - missing: ${r}`);
      for (const r of o.extra) lines.push(`      + extra:   ${r}`);
    }
  }
  if (report.foreign.length > 0) {
    lines.push(`  foreign (not the proxy's, left alone; not drift): ${report.foreign.length}`);
    for (const f of report.foreign)
      lines.push(`    ${f.kind} ${f.table} ${f.name}${f.rule === undefined ? "" : `: ${f.rule}`}`);
  }
  return lines.join("\n") + "\n";
}

/** Identifies the JSON layout (docs/drift.md). */
export const DRIFT_JSON_SCHEMA = "kube-proxy-ts/diff/v1";
