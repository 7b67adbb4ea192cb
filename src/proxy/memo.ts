import type { Endpoint, ServicePort } from "./types.ts";

/** The endpoint list of a service port that has none, shared so that identity still decides. */
export const NO_ENDPOINTS: readonly Endpoint[] = [];

/**
 * A renderer's per-service-port memo. A service port's output depends only on its ServicePort,
 * its endpoint list and a few inputs of the whole sync (settings, feature gates, the node's
 * labels…). The state store keeps the same objects for unchanged Services, so a partial sync at
 * 10,000 Services re-renders only what changed. Keyed weakly by the ServicePort object, so entries
 * go away with their Services; identity (not value) of every input decides a hit, so the renderer
 * stays a pure function of its input.
 */
export class ServicePortMemo<O> {
  private readonly entries = new WeakMap<
    ServicePort,
    { endpoints: readonly Endpoint[]; inputs: readonly unknown[]; out: O }
  >();

  /** The memoized output for these inputs, or `render()`'s, remembered for the next sync. */
  get(sp: ServicePort, endpoints: readonly Endpoint[], inputs: readonly unknown[], render: () => O): O {
    const hit = this.lookup(sp, endpoints, inputs);
    if (hit !== undefined) return hit;
    const out = render();
    this.remember(sp, endpoints, inputs, out);
    return out;
  }

  /** The memoized output for exactly these inputs; undefined when the service port must be rendered. */
  lookup(sp: ServicePort, endpoints: readonly Endpoint[], inputs: readonly unknown[]): O | undefined {
    const hit = this.entries.get(sp);
    if (
      hit !== undefined &&
      hit.endpoints === endpoints &&
      hit.inputs.length === inputs.length &&
      hit.inputs.every((input, i) => input === inputs[i])
    )
      return hit.out;
    return undefined;
  }

  /** Keeps `out` as the output of these inputs, for the next sync's `lookup`. */
  remember(sp: ServicePort, endpoints: readonly Endpoint[], inputs: readonly unknown[], out: O): void {
    this.entries.set(sp, { endpoints, inputs, out });
  }
}
