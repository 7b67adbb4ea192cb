import { watch } from "node:fs";
import type { Logger } from "pino";
import { namespacedName, type EndpointSlice, type Node, type Service } from "../k8s/objects.ts";
import { readManifestPaths } from "./manifests.ts";
import type { Source, SourceHandlers } from "./types.ts";

interface Snapshot {
  readonly services: Map<string, Service>;
  readonly slices: Map<string, EndpointSlice>;
  readonly node: Node | null;
}

/**
 * Standalone source: a folder of Service/EndpointSlice/Node manifests. The folder is re-read on
 * every change notification (and polled, since inotify misses some editors' rename dances);
 * differences against the last good read become add/update/delete events. A file that cannot be
 * parsed keeps the previous state (logged), so a half-written file never deletes Services.
 */
export class DirectorySource implements Source {
  private current: Snapshot = { services: new Map(), slices: new Map(), node: null };
  private lastText = "";

  constructor(
    private readonly dir: string,
    private readonly nodeName: string,
    private readonly log: Logger,
    private readonly pollMs = 2000,
  ) {}

  async start(handlers: SourceHandlers, signal: AbortSignal): Promise<void> {
    await this.reload(handlers);
    handlers.onSynced();
    let timer: NodeJS.Timeout | null = null;
    let running = Promise.resolve();
    const schedule = (delay: number) => {
      if (signal.aborted) return;
      if (timer !== null) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        running = running.then(() => this.reload(handlers));
      }, delay);
    };
    const watcher = watch(this.dir, { signal }, () => schedule(100));
    watcher.on("error", (err) =>
      this.log.warn({ err, dir: this.dir }, "Watching the manifests folder failed; polling only"),
    );
    const poll = setInterval(() => schedule(0), this.pollMs);
    await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
    clearInterval(poll);
    if (timer !== null) clearTimeout(timer);
    await running;
  }

  private async reload(handlers: SourceHandlers): Promise<void> {
    let objects;
    try {
      objects = await readManifestPaths([this.dir]);
    } catch (err) {
      this.log.error({ err, dir: this.dir }, "Cannot read manifests; keeping the previous state");
      return;
    }
    const text = JSON.stringify(objects);
    if (text === this.lastText) return;
    this.lastText = text;
    for (const problem of objects.problems) {
      this.log.warn(
        { object: problem.object, field: problem.field },
        `Skipping invalid object: ${problem.reason}`,
      );
    }
    const next: Snapshot = {
      services: new Map(objects.services.map((s) => [namespacedName(s.metadata), s])),
      slices: new Map(objects.endpointSlices.map((s) => [namespacedName(s.metadata), s])),
      node: objects.nodes.find((n) => n.metadata.name === this.nodeName) ?? null,
    };
    diff(this.current.services, next.services, (a, b) => handlers.onService(a, b));
    diff(this.current.slices, next.slices, (a, b) => handlers.onEndpointSlice(a, b));
    if (JSON.stringify(this.current.node) !== JSON.stringify(next.node)) handlers.onNode(next.node);
    this.current = next;
  }
}

function diff<T>(
  before: Map<string, T>,
  after: Map<string, T>,
  emit: (previous: T | null, current: T | null) => void,
): void {
  for (const [key, old] of before) if (!after.has(key)) emit(old, null);
  for (const [key, obj] of after) {
    const old = before.get(key);
    if (old === undefined) emit(null, obj);
    else if (JSON.stringify(old) !== JSON.stringify(obj)) emit(old, obj);
  }
}
