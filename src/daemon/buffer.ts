import type { EndpointSlice, Node, Service } from "../k8s/objects.ts";
import type { SourceHandlers } from "../source/types.ts";

/**
 * Source handlers that hold what arrives until the real handlers exist. The daemon starts its
 * source (reading the manifests, or listing from the API server) while the mode's platform
 * checks run, instead of after them; `attach` replays what was held, in order, then passes
 * everything through.
 */
export class HandlerBuffer implements SourceHandlers {
  private target: SourceHandlers | null = null;
  private held: ((handlers: SourceHandlers) => void)[] = [];

  onService(previous: Service | null, current: Service | null): void {
    this.deliver((h) => h.onService(previous, current));
  }

  onEndpointSlice(previous: EndpointSlice | null, current: EndpointSlice | null): void {
    this.deliver((h) => h.onEndpointSlice(previous, current));
  }

  onNode(node: Node | null): void {
    this.deliver((h) => h.onNode(node));
  }

  onServiceCIDRs(cidrs: readonly string[] | null): void {
    this.deliver((h) => h.onServiceCIDRs(cidrs));
  }

  onSynced(): void {
    this.deliver((h) => h.onSynced());
  }

  /** Replays the held events into `handlers`, which receive every later event directly. */
  attach(handlers: SourceHandlers): void {
    const held = this.held;
    this.held = [];
    this.target = handlers;
    for (const event of held) event(handlers);
  }

  private deliver(event: (handlers: SourceHandlers) => void): void {
    if (this.target === null) this.held.push(event);
    else event(this.target);
  }
}
