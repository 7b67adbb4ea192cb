import type { Logger } from "pino";

/** What an event is about (upstream `v1.ObjectReference`). */
export interface ObjectRef {
  readonly kind: string;
  readonly apiVersion?: string;
  readonly namespace?: string;
  readonly name: string;
  readonly uid?: string;
}

/** The one call an event recorder needs from the API client (KubeClient.request). */
export interface EventSink {
  request(method: string, path: string, opts: { body?: unknown; contentType?: string }): Promise<unknown>;
}

/** Go's metav1.MicroTime in JSON: RFC 3339 in UTC with exactly six fractional digits. */
export function microTime(ms: number): string {
  const iso = new Date(ms).toISOString();
  return `${iso.slice(0, 19)}.${iso.slice(20, 23)}000Z`;
}

/**
 * Records Kubernetes Events (events.k8s.io/v1) the way upstream kube-proxy's recorder does:
 * reportingController `kube-proxy`, reportingInstance `kube-proxy-<node>`, the event in the
 * regarding object's namespace (`default` for cluster-scoped objects such as the Node).
 * Fire-and-forget: a failed post is logged, never thrown, and never delays a sync.
 */
export class EventRecorder {
  private serial = 0;

  constructor(
    private readonly sink: EventSink,
    private readonly nodeName: string,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  eventf(
    regarding: ObjectRef,
    type: "Normal" | "Warning",
    reason: string,
    action: string,
    note: string,
  ): Promise<void> {
    const namespace =
      regarding.namespace !== undefined && regarding.namespace !== "" ? regarding.namespace : "default";
    const at = this.now();
    const body = {
      apiVersion: "events.k8s.io/v1",
      kind: "Event",
      metadata: { name: `${regarding.name}.${(at * 1_000_000 + this.serial++).toString(16)}`, namespace },
      eventTime: microTime(at),
      reportingController: "kube-proxy",
      reportingInstance: `kube-proxy-${this.nodeName}`,
      action,
      reason,
      regarding,
      note,
      type,
    };
    return this.sink
      .request("POST", `/apis/events.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/events`, {
        body,
        contentType: "application/json",
      })
      .then(
        () => undefined,
        (err: unknown) =>
          this.log.warn(
            { err, reason, regarding: `${regarding.kind} ${regarding.name}` },
            "Failed to record event",
          ),
      );
  }
}

/** Upstream's reference to the proxy's own Node (UID = node name, as kube-proxy sets it). */
export function nodeRef(nodeName: string): ObjectRef {
  return { kind: "Node", name: nodeName, uid: nodeName };
}
