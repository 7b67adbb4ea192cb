/**
 * Incremental trackers for the live daemon, shaped like upstream's
 * `servicechangetracker.go` / `endpointschangetracker.go` / `endpointslicecache.go`:
 * watch events are folded into pending {previous, current} pairs (dropped again when they
 * cancel out), and `ProxyStateStore.applyPending` moves them into the applied state, reporting
 * which Services changed so a backend can do a partial sync.
 *
 * The store always holds the complete applied state, so a failed sync loses nothing: the
 * proxier simply forces a full sync next time (upstream behaviour).
 */
import type { InvalidObjectError } from "../errors.ts";
import { ANNOTATION_LAST_CHANGE_TRIGGER_TIME, LABEL_TOPOLOGY_ZONE, namespacedName } from "../k8s/objects.ts";
import type { EndpointSlice, Node, Service } from "../k8s/objects.ts";
import { inSliceNameOrder, mergeEndpoints, sliceEndpoints, sliceServiceName } from "./endpoints.ts";
import type { EndpointsContext, ServiceEndpoints } from "./endpoints.ts";
import { resolveFeatureGates, servicePortsForFamily } from "./serviceport.ts";
import type { FeatureGates } from "./serviceport.ts";
import { isForThisProxy, missingServiceNameProblem } from "./state.ts";
import type { ProxyStateOptions } from "./state.ts";
import { servicePortKey } from "./types.ts";
import type { Endpoint, ProxyState, ServicePort } from "./types.ts";

export interface TrackerOptions extends ProxyStateOptions {
  /** Milliseconds since the epoch; injected so tests control time. */
  readonly clock?: () => number;
}

type PortMap = ReadonlyMap<string, ServicePort>;
type EndpointsByPort = ReadonlyMap<string, readonly Endpoint[]>;

const NO_ENDPOINTS_BY_PORT: EndpointsByPort = new Map();

interface Change<T> {
  previous: T;
  current: T;
}

/** Structural equality for plain data (objects, arrays, primitives). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (a instanceof Map || b instanceof Map) {
    if (!(a instanceof Map) || !(b instanceof Map) || a.size !== b.size) return false;
    for (const [k, v] of a) if (!b.has(k) || !deepEqual(v, b.get(k))) return false;
    return true;
  }
  if (a instanceof Set || b instanceof Set) {
    if (!(a instanceof Set) || !(b instanceof Set) || a.size !== b.size) return false;
    for (const v of a) if (!b.has(v)) return false;
    return true;
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  for (const k of ka) if (!Object.hasOwn(rb, k) || !deepEqual(ra[k], rb[k])) return false;
  return true;
}

export class ServiceChangeTracker {
  private readonly items = new Map<string, Change<PortMap>>();
  private warnings: InvalidObjectError[] = [];
  private readonly gates: FeatureGates;

  constructor(private readonly options: ProxyStateOptions) {
    this.gates = resolveFeatureGates(options.featureGates);
  }

  private toPortMap(svc: Service | null): PortMap {
    const out = new Map<string, ServicePort>();
    if (svc === null || !isForThisProxy(svc.metadata, this.options.serviceProxyName)) return out;
    const r = servicePortsForFamily(svc, this.options.family, this.gates);
    this.warnings.push(...r.warnings);
    for (const sp of r.ports) out.set(servicePortKey(sp.name), sp);
    return out;
  }

  /** A watch event (add: previous null; delete: current null). True if any change is pending. */
  update(previous: Service | null, current: Service | null): boolean {
    const svc = current ?? previous;
    if (svc === null) return false;
    const nn = namespacedName(svc.metadata);
    let change = this.items.get(nn);
    if (change === undefined) {
      change = { previous: this.toPortMap(previous), current: new Map() };
      this.items.set(nn, change);
    }
    change.current = this.toPortMap(current);
    if (deepEqual(change.previous, change.current)) this.items.delete(nn);
    return this.items.size > 0;
  }

  get pendingCount(): number {
    return this.items.size;
  }

  /** Hands over (and forgets) the pending changes and the warnings collected meanwhile. */
  checkout(): { changes: Map<string, Change<PortMap>>; warnings: InvalidObjectError[] } {
    const changes = new Map(this.items);
    this.items.clear();
    const warnings = this.warnings;
    this.warnings = [];
    return { changes, warnings };
  }
}

/** A slice as the tracker keeps it: the object (to compare the next event with) and its endpoints. */
interface TrackedSlice {
  readonly slice: EndpointSlice;
  readonly endpoints: ServiceEndpoints;
}

/**
 * One Service's slices. Pending changes are kept beside the trackers (`EndpointsChangeTracker.
 * pending`), not in a map per Service that stays, empty, between changes.
 */
interface SliceTracker {
  readonly applied: Map<string, TrackedSlice>;
  /** The Service's endpoints as of the last checkout (what `applied` gives). */
  merged: EndpointsByPort;
}

/** The parts of a slice that affect endpoints; metadata churn (resourceVersion…) is not a change. */
function sliceContent(slice: EndpointSlice | null): unknown {
  if (slice === null) return null;
  return { addressType: slice.addressType, endpoints: slice.endpoints, ports: slice.ports };
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

function lastChangeTriggerTime(slice: EndpointSlice): number | null {
  const v = slice.metadata.annotations[ANNOTATION_LAST_CHANGE_TRIGGER_TIME];
  if (v === undefined || !RFC3339.test(v)) return null;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : t;
}

export class EndpointsChangeTracker {
  private readonly trackers = new Map<string, SliceTracker>();
  /** Per Service, its slices with a pending change (null = pending removal). */
  private readonly pending = new Map<string, Map<string, TrackedSlice | null>>();
  private readonly triggerTimes = new Map<string, number[]>();
  private pendingSlices = 0;
  private problems: InvalidObjectError[] = [];
  private readonly startTime: number;

  /** `ctx`: how a slice's endpoints are built, done once per slice event (upstream's slice cache does the same). */
  constructor(
    private readonly options: ProxyStateOptions,
    private readonly ctx: EndpointsContext,
    clock: () => number,
  ) {
    this.startTime = clock();
  }

  /** A watch event for one slice. True if this slice's change is pending. */
  endpointSliceUpdate(slice: EndpointSlice, removed: boolean): boolean {
    if (slice.addressType !== this.options.family) return false;
    const svcNN = sliceServiceName(slice);
    if (svcNN === null) {
      this.problems.push(missingServiceNameProblem(slice));
      return false;
    }
    // A slice that stopped being ours (label added) is gone as far as we are concerned.
    const remove = removed || !isForThisProxy(slice.metadata, this.options.serviceProxyName);
    const applied = this.trackers.get(svcNN)?.applied;
    let pending = this.pending.get(svcNN);
    const name = slice.metadata.name;
    const next = remove ? null : slice;
    let changed: boolean;
    if (pending?.has(name) === true) {
      changed = !deepEqual(sliceContent(next), sliceContent(pending.get(name)?.slice ?? null));
    } else if (applied?.has(name) === true) {
      changed = !deepEqual(sliceContent(next), sliceContent(applied.get(name)?.slice ?? null));
    } else {
      changed = !remove;
    }
    if (!changed) return false;
    if (pending === undefined) {
      pending = new Map();
      this.pending.set(svcNN, pending);
    }
    if (!pending.has(name)) this.pendingSlices++;
    pending.set(name, next === null ? null : { slice: next, endpoints: sliceEndpoints(next, this.ctx) });
    // A deletion's trigger time is that of the last update, not of the deletion: not measurable.
    if (remove) {
      this.triggerTimes.delete(svcNN);
    } else {
      const t = lastChangeTriggerTime(slice);
      if (t !== null && t > this.startTime) {
        const list = this.triggerTimes.get(svcNN);
        if (list === undefined) this.triggerTimes.set(svcNN, [t]);
        else list.push(t);
      }
    }
    return true;
  }

  /** Number of slices with a pending change. */
  get pendingCount(): number {
    return this.pendingSlices;
  }

  /** Applies pending slice changes; returns per changed Service its endpoints before and after. */
  checkout(): {
    changes: Map<string, Change<EndpointsByPort>>;
    triggerTimes: Map<string, number[]>;
    warnings: InvalidObjectError[];
    problems: InvalidObjectError[];
  } {
    const changes = new Map<string, Change<EndpointsByPort>>();
    const warnings: InvalidObjectError[] = [];
    for (const [svcNN, pending] of this.pending) {
      let tracker = this.trackers.get(svcNN);
      if (tracker === undefined) {
        tracker = { applied: new Map(), merged: NO_ENDPOINTS_BY_PORT };
        this.trackers.set(svcNN, tracker);
      }
      for (const [name, tracked] of pending) {
        if (tracked === null) {
          tracker.applied.delete(name);
        } else {
          tracker.applied.set(name, tracked);
          warnings.push(...tracked.endpoints.warnings);
        }
      }
      const previous = tracker.merged;
      tracker.merged = mergeEndpoints(
        inSliceNameOrder([...tracker.applied], ([name]) => name).map(([, t]) => t.endpoints.byPort),
      );
      changes.set(svcNN, { previous, current: tracker.merged });
      if (tracker.applied.size === 0) this.trackers.delete(svcNN);
    }
    this.pending.clear();
    this.pendingSlices = 0;
    const triggerTimes = new Map(this.triggerTimes);
    this.triggerTimes.clear();
    const problems = this.problems;
    this.problems = [];
    return { changes, triggerTimes, warnings, problems };
  }
}

export interface ApplyResult {
  readonly state: ProxyState;
  /** `ns/name` of every Service whose ports or endpoints changed since the last apply. */
  readonly updatedServices: ReadonlySet<string>;
  /** Some changed Service had a UDP port before or after the change (docs/iptables.md §5.6). */
  readonly conntrackCleanupRequired: boolean;
  /** This node's topology labels changed: the next sync must be a full one. */
  readonly topologyChanged: boolean;
  /**
   * `endpoints.kubernetes.io/last-change-trigger-time` values (ms since epoch) per Service,
   * only for changes after the tracker started. Observe them with `programmingLatencies`
   * once the sync succeeded, as upstream does.
   */
  readonly lastChangeTriggerTimes: ReadonlyMap<string, readonly number[]>;
  /** Slices that could not be used at all. */
  readonly problems: readonly InvalidObjectError[];
  /** Values dropped from otherwise usable objects (invalid external IPs, …). */
  readonly warnings: readonly InvalidObjectError[];
}

/** Network programming latencies (seconds) of an applied change set, measured at `nowMs`. */
export function programmingLatencies(
  result: Pick<ApplyResult, "lastChangeTriggerTimes">,
  nowMs: number,
): number[] {
  const out: number[] = [];
  for (const times of result.lastChangeTriggerTimes.values())
    for (const t of times) out.push((nowMs - t) / 1000);
  return out;
}

function hasUDP(ports: EndpointsByPort): boolean {
  for (const key of ports.keys()) if (key.endsWith("/UDP")) return true;
  return false;
}

export class ProxyStateStore {
  readonly serviceChanges: ServiceChangeTracker;
  readonly endpointsChanges: EndpointsChangeTracker;
  private readonly services = new Map<string, ServicePort>();
  private readonly endpoints = new Map<string, readonly Endpoint[]>();
  private nodeLabels: Readonly<Record<string, string>> = {};
  private topologyChanged = false;

  constructor(private readonly options: TrackerOptions) {
    const gates = resolveFeatureGates(options.featureGates);
    this.serviceChanges = new ServiceChangeTracker(options);
    this.endpointsChanges = new EndpointsChangeTracker(
      options,
      { family: options.family, nodeName: options.nodeName, gates },
      options.clock ?? Date.now,
    );
  }

  /** This node was added/updated/deleted. True when its topology label changed (full sync). */
  nodeUpdate(node: Node | null): boolean {
    const labels = node?.metadata.labels ?? {};
    if (labels[LABEL_TOPOLOGY_ZONE] !== this.nodeLabels[LABEL_TOPOLOGY_ZONE]) this.topologyChanged = true;
    this.nodeLabels = labels;
    return this.topologyChanged;
  }

  /** The applied state (as of the last `applyPending`). */
  get state(): ProxyState {
    return {
      family: this.options.family,
      services: new Map(this.services),
      endpoints: new Map(this.endpoints),
      nodeLabels: this.nodeLabels,
    };
  }

  applyPending(): ApplyResult {
    const updatedServices = new Set<string>();
    const svc = this.serviceChanges.checkout();
    for (const [nn, change] of svc.changes) {
      updatedServices.add(nn);
      for (const key of change.previous.keys()) if (!change.current.has(key)) this.services.delete(key);
      for (const [key, sp] of change.current) this.services.set(key, sp);
    }
    const ep = this.endpointsChanges.checkout();
    let conntrackCleanupRequired = false;
    for (const [nn, change] of ep.changes) {
      updatedServices.add(nn);
      for (const key of change.previous.keys()) this.endpoints.delete(key);
      for (const [key, eps] of change.current) this.endpoints.set(key, eps);
      if (hasUDP(change.previous) || hasUDP(change.current)) conntrackCleanupRequired = true;
    }
    const topologyChanged = this.topologyChanged;
    this.topologyChanged = false;
    return {
      state: this.state,
      updatedServices,
      conntrackCleanupRequired,
      topologyChanged,
      lastChangeTriggerTimes: ep.triggerTimes,
      problems: ep.problems,
      warnings: [...svc.warnings, ...ep.warnings],
    };
  }
}
