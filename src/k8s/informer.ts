/**
 * The reflector + store loop: list (paginated), then watch from the list's resourceVersion with
 * bookmarks, re-watch when the server ends the watch, back off on failures, relist on 410 Gone,
 * and turn everything into add/update/delete calls against a local store so that a relist never
 * loses a delete that happened while the watch was down.
 */
import { KubeProxyError } from "../errors.ts";
import { ApiError, WatchStalledError } from "./client.ts";
import type { ListWatchClient, ResourceRef, SelectorOptions, WatchEvent } from "./client.ts";
import { Backoff, systemSleepClock } from "./ratelimit.ts";
import type { BackoffOptions, SleepClock } from "./ratelimit.ts";

/** The metadata the informer itself needs; the rest of the object stays raw for the decoders. */
export interface ObjectMeta {
  readonly namespace: string | undefined;
  readonly name: string;
  readonly uid: string;
  readonly resourceVersion: string;
}

export interface KubeObject {
  readonly meta: ObjectMeta;
  readonly raw: unknown;
}

export interface InformerHandlers {
  onAdd(obj: KubeObject): void | Promise<void>;
  onUpdate(oldObj: KubeObject, newObj: KubeObject): void | Promise<void>;
  onDelete(obj: KubeObject): void | Promise<void>;
  /** Once, after the first complete list has been delivered. */
  onSynced(): void | Promise<void>;
}

/** Something worth a log line; the informer itself never logs. */
export type InformerNotice =
  | { readonly kind: "list-failed" | "watch-failed"; readonly error: unknown; readonly retryInMs: number }
  | { readonly kind: "relist"; readonly reason: string }
  | { readonly kind: "invalid-object"; readonly error: InvalidMetaError };

export interface InformerOptions extends SelectorOptions {
  readonly pageSize?: number;
  /** Server-side watch timeout; client-go picks 5–10 minutes at random per watch. */
  readonly watchTimeoutSeconds?: () => number;
  /**
   * A watch silent for this long is considered dead. The apiserver sends watchers that allow
   * bookmarks one about every minute, so silence well beyond that means a broken connection.
   */
  readonly idleTimeoutMs?: number;
  readonly backoff?: BackoffOptions;
  readonly clock?: SleepClock;
  readonly random?: () => number;
  readonly onNotice?: (notice: InformerNotice) => void;
  /**
   * For a resource the API server may not have (a newer API group): called when the list
   * answers 404, and the informer stops instead of retrying. Without it, 404 is retried.
   */
  readonly onResourceAbsent?: () => void;
}

/** An object from the API without the metadata every object must have. */
export class InvalidMetaError extends KubeProxyError {
  readonly code = "KPT_K8S_INVALID_META";

  constructor(
    readonly resource: string,
    readonly field: string,
  ) {
    super(`${resource}: object without ${field}; skipped`);
  }
}

function metaOf(resource: ResourceRef, raw: unknown): ObjectMeta {
  const meta =
    raw !== null && typeof raw === "object" ? (raw as Record<string, unknown>)["metadata"] : undefined;
  if (meta === null || typeof meta !== "object") throw new InvalidMetaError(resource.kind, "metadata");
  const m = meta as Record<string, unknown>;
  if (typeof m["name"] !== "string" || m["name"] === "")
    throw new InvalidMetaError(resource.kind, "metadata.name");
  if (resource.namespaced && typeof m["namespace"] !== "string") {
    throw new InvalidMetaError(resource.kind, `metadata.namespace of ${m["name"]}`);
  }
  return {
    namespace: resource.namespaced ? (m["namespace"] as string) : undefined,
    name: m["name"],
    uid: typeof m["uid"] === "string" ? m["uid"] : "",
    resourceVersion: typeof m["resourceVersion"] === "string" ? m["resourceVersion"] : "",
  };
}

function keyOf(meta: ObjectMeta): string {
  return meta.namespace === undefined ? meta.name : `${meta.namespace}/${meta.name}`;
}

/** The label selector upstream kube-proxy uses for Services and EndpointSlices. */
export const PROXY_LABEL_SELECTOR =
  "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
/** Services without a cluster IP (headless) are of no interest to a proxy. */
export const SERVICE_FIELD_SELECTOR = "spec.clusterIP!=None";

/** Why the watch loop returned to the list step. */
class RelistNeeded extends Error {}

export class Informer {
  private readonly store = new Map<string, KubeObject>();
  private lastResourceVersion = "";
  private synced = false;
  private readonly clock: SleepClock;
  private readonly backoff: Backoff;

  constructor(
    private readonly client: ListWatchClient,
    readonly resource: ResourceRef,
    private readonly handlers: InformerHandlers,
    private readonly options: InformerOptions = {},
  ) {
    this.clock = options.clock ?? systemSleepClock;
    this.backoff = new Backoff(options.backoff, this.clock, options.random);
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  get resourceVersion(): string {
    return this.lastResourceVersion;
  }

  /** The current view: what the handlers have been told exists. */
  list(): KubeObject[] {
    return [...this.store.values()];
  }

  private selectors(): SelectorOptions {
    const { labelSelector, fieldSelector, namespace } = this.options;
    return {
      ...(labelSelector !== undefined ? { labelSelector } : {}),
      ...(fieldSelector !== undefined ? { fieldSelector } : {}),
      ...(namespace !== undefined ? { namespace } : {}),
    };
  }

  private decode(raw: unknown): KubeObject | undefined {
    try {
      return { meta: metaOf(this.resource, raw), raw };
    } catch (err) {
      if (!(err instanceof InvalidMetaError)) throw err;
      this.options.onNotice?.({ kind: "invalid-object", error: err });
      return undefined;
    }
  }

  /**
   * Runs until the signal aborts, then resolves. API failures are retried with back-off; it
   * rejects only when a handler throws.
   */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await this.listAndReplace(signal);
      } catch (err) {
        if (signal.aborted) return;
        // Only API trouble is retried; a throwing handler is a bug and surfaces to the caller.
        if (!(err instanceof ApiError)) throw err;
        if (err.status === 404 && this.options.onResourceAbsent !== undefined) {
          this.options.onResourceAbsent();
          return;
        }
        await this.pause("list-failed", err, signal);
        continue;
      }
      try {
        await this.watchLoop(signal);
      } catch (err) {
        if (signal.aborted) return;
        if (!(err instanceof RelistNeeded)) throw err;
      }
    }
  }

  private async pause(
    kind: "list-failed" | "watch-failed",
    error: unknown,
    signal: AbortSignal,
  ): Promise<void> {
    const retryInMs = this.backoff.next();
    this.options.onNotice?.({ kind, error, retryInMs });
    try {
      await this.clock.sleep(retryInMs, signal);
    } catch {
      // Aborted while waiting: the caller's loop sees signal.aborted and stops.
    }
  }

  private async listAndReplace(signal: AbortSignal): Promise<void> {
    const page = await this.client.listAll(this.resource, {
      ...this.selectors(),
      limit: this.options.pageSize ?? 500,
      signal,
    });
    const fresh = new Map<string, KubeObject>();
    for (const raw of page.items) {
      const obj = this.decode(raw);
      if (obj) fresh.set(keyOf(obj.meta), obj);
    }
    for (const [key, old] of this.store) {
      if (!fresh.has(key)) {
        this.store.delete(key);
        await this.handlers.onDelete(old);
      }
    }
    for (const [key, obj] of fresh) {
      const old = this.store.get(key);
      this.store.set(key, obj);
      if (old === undefined) await this.handlers.onAdd(obj);
      else if (old.meta.resourceVersion !== obj.meta.resourceVersion) await this.handlers.onUpdate(old, obj);
    }
    this.lastResourceVersion = page.resourceVersion;
    if (!this.synced) {
      this.synced = true;
      await this.handlers.onSynced();
    }
  }

  /** Watches until the signal aborts or a relist is needed (throws RelistNeeded). */
  private async watchLoop(signal: AbortSignal): Promise<void> {
    const random = this.options.random ?? Math.random;
    while (!signal.aborted) {
      const timeoutSeconds = this.options.watchTimeoutSeconds?.() ?? Math.floor(300 * (1 + random()));
      try {
        const events = this.client.watch(this.resource, {
          ...this.selectors(),
          resourceVersion: this.lastResourceVersion,
          allowWatchBookmarks: true,
          timeoutSeconds,
          idleTimeoutMs: this.options.idleTimeoutMs ?? 150_000,
          signal,
        });
        for await (const event of events) await this.apply(event);
        // The server ended the watch (timeoutSeconds): resume from where we are, no back-off.
      } catch (err) {
        if (signal.aborted || err instanceof RelistNeeded) throw err;
        if (err instanceof ApiError && err.isExpired) {
          this.options.onNotice?.({ kind: "relist", reason: err.message });
          throw new RelistNeeded();
        }
        if (!(err instanceof ApiError) && !(err instanceof WatchStalledError)) throw err;
        await this.pause("watch-failed", err, signal);
      }
    }
  }

  private async apply(event: WatchEvent): Promise<void> {
    if (event.type === "ERROR") {
      if (event.error.isExpired) {
        this.options.onNotice?.({ kind: "relist", reason: event.error.message });
        throw new RelistNeeded();
      }
      throw event.error;
    }
    if (event.type === "BOOKMARK") {
      const rv = (event.object as { metadata?: { resourceVersion?: unknown } } | null)?.metadata
        ?.resourceVersion;
      if (typeof rv === "string" && rv !== "") this.lastResourceVersion = rv;
      return;
    }
    const obj = this.decode(event.object);
    if (obj === undefined) return;
    const key = keyOf(obj.meta);
    const old = this.store.get(key);
    if (event.type === "DELETED") {
      this.store.delete(key);
      await this.handlers.onDelete(old ?? obj);
    } else {
      this.store.set(key, obj);
      if (old === undefined) await this.handlers.onAdd(obj);
      else await this.handlers.onUpdate(old, obj);
    }
    if (obj.meta.resourceVersion !== "") this.lastResourceVersion = obj.meta.resourceVersion;
    this.backoff.reset();
  }
}
