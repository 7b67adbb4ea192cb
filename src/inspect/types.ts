/**
 * What the see-inside tools (`trace`, `explain`, the web view) read from a node, whatever the
 * mode: each mode's reader produces a `KernelReading`, each mode's explainer turns it into the
 * neutral `ServiceView`s of ./model.ts.
 */
import type { ProxyMode } from "../config/types.ts";

export interface KernelReading {
  readonly mode: ProxyMode;
  /** The mode's own dump per IP family (iptables: `iptables-save -c` text). */
  readonly dumps: readonly string[];
  /** The node's addresses, bare (no prefix length). */
  readonly localAddresses: readonly string[];
}

/** Reads the live kernel (or, in tests, anything that looks like it). */
export interface InspectionSource {
  read(): Promise<KernelReading>;
}
