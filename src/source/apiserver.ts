import { Counter, type Registry } from "prom-client";
import type { Logger } from "pino";
import { InvalidObjectError } from "../errors.ts";
import { ApiError, ENDPOINT_SLICES, NODES, SERVICE_CIDRS, SERVICES } from "../k8s/client.ts";
import type { ListWatchClient, ResourceRef } from "../k8s/client.ts";
import { Informer, PROXY_LABEL_SELECTOR, SERVICE_FIELD_SELECTOR } from "../k8s/informer.ts";
import type { InformerNotice, InformerOptions, KubeObject } from "../k8s/informer.ts";
import {
  decodeEndpointSlice,
  decodeNode,
  decodeService,
  decodeServiceCIDR,
  serviceCIDRUnion,
} from "../k8s/objects.ts";
import type { EndpointSlice, Node, Service, ServiceCIDR } from "../k8s/objects.ts";
import type { Source, SourceHandlers } from "./types.ts";

export interface ApiServerSourceOptions {
  readonly client: ListWatchClient;
  readonly nodeName: string;
  readonly log: Logger;
  /**
   * How long the first sync waits for this node's Node object when the list finds none: upstream
   * retries the Node lookup for about a minute before settling for the bindAddress or loopback.
   */
  readonly nodeWaitMs?: number;
  /** Where `kubeproxy_ts_informer_notices_total` is registered (the daemon's /metrics). */
  readonly registry?: Registry;
  /** Informer tuning (tests shorten the stall detection and back-off). */
  readonly informer?: Pick<InformerOptions, "idleTimeoutMs" | "backoff" | "watchTimeoutSeconds">;
}

/** One informer's decoded view: what the proxy has been told exists, by namespace/name. */
class Decoded<T> {
  private readonly delivered = new Map<string, T>();

  constructor(
    private readonly resource: ResourceRef,
    private readonly decode: (raw: unknown, source: string) => T,
    private readonly emit: (previous: T | null, current: T | null) => void,
    private readonly log: Logger,
  ) {}

  private keyOf(obj: KubeObject): string {
    return obj.meta.namespace === undefined ? obj.meta.name : `${obj.meta.namespace}/${obj.meta.name}`;
  }

  /**
   * An object that does not decode is treated as absent, as the manifests folder does: a Service
   * that became invalid must not keep stale rules, and a valid one later reappears as an add.
   */
  upsert(obj: KubeObject): void {
    const key = this.keyOf(obj);
    const previous = this.delivered.get(key) ?? null;
    let current: T;
    try {
      current = this.decode(obj.raw, `${this.resource.plural} watch`);
    } catch (err) {
      if (!(err instanceof InvalidObjectError)) throw err;
      this.log.warn(
        { object: err.object, field: err.field, resource: this.resource.plural },
        `Skipping invalid object: ${err.reason}`,
      );
      if (previous !== null) this.remove(obj);
      return;
    }
    this.delivered.set(key, current);
    this.emit(previous, current);
  }

  remove(obj: KubeObject): void {
    const key = this.keyOf(obj);
    const previous = this.delivered.get(key);
    if (previous === undefined) return;
    this.delivered.delete(key);
    this.emit(previous, null);
  }

  values(): IterableIterator<T> {
    return this.delivered.values();
  }
}

/**
 * The API server as the proxy's source, as upstream kube-proxy watches it: Services and
 * EndpointSlices not claimed by another proxy and not headless, this node's Node object, and the
 * ServiceCIDRs where the API has them (a 404 says it does not: reported once as null). As
 * upstream's ServiceCIDRConfig, the first sync does not wait for the ServiceCIDRs.
 * Informers keep retrying through API trouble; the rules already programmed stay untouched
 * until the informers deliver a newer state.
 */
export class ApiServerSource implements Source {
  private readonly notices: Counter<"resource" | "kind"> | null;

  constructor(private readonly options: ApiServerSourceOptions) {
    this.notices =
      options.registry === undefined
        ? null
        : new Counter({
            name: "kubeproxy_ts_informer_notices_total",
            help: "API watch trouble seen by the informers: list-failed, watch-failed, relist (410 Gone), invalid-object",
            labelNames: ["resource", "kind"],
            registers: [options.registry],
          });
  }

  async start(handlers: SourceHandlers, signal: AbortSignal): Promise<void> {
    const { client, log, nodeName } = this.options;
    const services = new Decoded(
      SERVICES,
      decodeService,
      (a: Service | null, b: Service | null) => handlers.onService(a, b),
      log,
    );
    const slices = new Decoded(
      ENDPOINT_SLICES,
      decodeEndpointSlice,
      (a: EndpointSlice | null, b: EndpointSlice | null) => handlers.onEndpointSlice(a, b),
      log,
    );
    let nodeSeen = false;
    let nodeArrived: () => void = () => undefined;
    const nodes = new Decoded(
      NODES,
      decodeNode,
      (_: Node | null, b: Node | null) => {
        nodeSeen ||= b !== null;
        handlers.onNode(b);
        if (b !== null) nodeArrived();
      },
      log,
    );

    // Reported once listed, then after every change that alters the union.
    let cidrsListed = false;
    let reportedCIDRs: string | null = null;
    const reportCIDRs = () => {
      if (!cidrsListed) return;
      const union = serviceCIDRUnion(serviceCIDRs.values());
      const key = union.join(",");
      if (key === reportedCIDRs) return;
      reportedCIDRs = key;
      handlers.onServiceCIDRs(union);
    };
    const serviceCIDRs: Decoded<ServiceCIDR> = new Decoded(
      SERVICE_CIDRS,
      decodeServiceCIDR,
      () => reportCIDRs(),
      log,
    );

    const pending = new Set(["services", "endpointslices", "nodes"]);
    let listed!: () => void;
    const allListed = new Promise<void>((resolve) => (listed = resolve));
    const informer = (resource: ResourceRef, decoded: Decoded<unknown>, selectors: InformerOptions) =>
      new Informer(
        client,
        resource,
        {
          onAdd: (obj) => decoded.upsert(obj),
          onUpdate: (_, obj) => decoded.upsert(obj),
          onDelete: (obj) => decoded.remove(obj),
          onSynced: () => {
            if (resource === SERVICE_CIDRS) {
              cidrsListed = true;
              reportCIDRs();
            }
            pending.delete(resource.plural);
            if (pending.size === 0) listed();
          },
        },
        {
          ...this.options.informer,
          ...selectors,
          onNotice: (notice) => this.notice(resource, notice),
        },
      );
    const runs = [
      informer(SERVICES, services as Decoded<unknown>, {
        labelSelector: PROXY_LABEL_SELECTOR,
        fieldSelector: SERVICE_FIELD_SELECTOR,
      }),
      informer(ENDPOINT_SLICES, slices as Decoded<unknown>, { labelSelector: PROXY_LABEL_SELECTOR }),
      informer(NODES, nodes as Decoded<unknown>, { fieldSelector: `metadata.name=${nodeName}` }),
      informer(SERVICE_CIDRS, serviceCIDRs as Decoded<unknown>, {
        onResourceAbsent: () => {
          log.info(
            "The API server has no networking.k8s.io/v1 ServiceCIDRs: using --service-cluster-ip-range",
          );
          handlers.onServiceCIDRs(null);
        },
      }),
    ].map((i) => i.run(signal));

    const aborted = signal.aborted
      ? Promise.resolve()
      : new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
    const firstSync = (async () => {
      await Promise.race([allListed, aborted]);
      if (!nodeSeen && !signal.aborted) {
        const waitMs = this.options.nodeWaitMs ?? 30_000;
        log.info({ node: nodeName, waitMs }, "Node object not found yet; waiting for it");
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          new Promise<void>((resolve) => {
            timer = setTimeout(resolve, waitMs);
            nodeArrived = resolve;
          }),
          aborted,
        ]);
        clearTimeout(timer);
      }
      if (!signal.aborted) handlers.onSynced();
    })();
    await Promise.all([...runs, firstSync]);
  }

  private notice(resource: ResourceRef, notice: InformerNotice): void {
    this.notices?.inc({ resource: resource.plural, kind: notice.kind });
    const { log } = this.options;
    switch (notice.kind) {
      case "list-failed":
      case "watch-failed":
        log.warn(
          {
            resource: resource.plural,
            error: notice.error instanceof Error ? notice.error.message : String(notice.error),
            status: notice.error instanceof ApiError ? notice.error.status : undefined,
            retryInMs: notice.retryInMs,
          },
          `API ${notice.kind === "list-failed" ? "list" : "watch"} failed; keeping the current rules and retrying`,
        );
        return;
      case "relist":
        log.info({ resource: resource.plural, reason: notice.reason }, "Watch expired; relisting");
        return;
      case "invalid-object":
        log.warn(
          { resource: resource.plural, field: notice.error.field },
          `Skipping invalid object: ${notice.error.message}`,
        );
    }
  }
}
