import type { EndpointSlice, Node, Service } from "../k8s/objects.ts";

/**
 * What a source (API server watch, manifests folder) tells the proxy, upstream's informer
 * handler shape: add = (null, obj), update = (old, new), delete = (old, null).
 */
export interface SourceHandlers {
  onService(previous: Service | null, current: Service | null): void;
  onEndpointSlice(previous: EndpointSlice | null, current: EndpointSlice | null): void;
  /** This proxy's own Node object (null when deleted). */
  onNode(node: Node | null): void;
  /**
   * The CIDRs of every ServiceCIDR object, sorted, after each change; null once when the source
   * has no such resource (an API server before v1.33), so the configured fallback applies.
   */
  onServiceCIDRs(cidrs: readonly string[] | null): void;
  /** The initial lists of Services and EndpointSlices were delivered. */
  onSynced(): void;
}

export interface Source {
  /** Delivers the current objects, then changes until `signal` aborts. */
  start(handlers: SourceHandlers, signal: AbortSignal): Promise<void>;
}
