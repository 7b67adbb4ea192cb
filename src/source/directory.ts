import { watch } from "node:fs";
import { readFile, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { InputError } from "../errors.ts";
import {
  namespacedName,
  serviceCIDRUnion,
  type EndpointSlice,
  type Node,
  type Service,
  type ServiceCIDR,
} from "../k8s/objects.ts";
import { isManifestFile, oversizedManifest, parseManifests, type ManifestObjects } from "./manifests.ts";
import type { Source, SourceHandlers } from "./types.ts";

/** The objects one file contributes, by namespace/name (Nodes by name). */
interface Contribution {
  readonly services: ReadonlyMap<string, Service>;
  readonly slices: ReadonlyMap<string, EndpointSlice>;
  readonly nodes: ReadonlyMap<string, Node>;
  readonly serviceCIDRs: ReadonlyMap<string, ServiceCIDR>;
}

interface FileState {
  /** What the file looked like when it was last read: a change of any of these re-reads it. */
  readonly mtimeMs: number;
  readonly size: number;
  readonly ino: number;
  readonly objects: Contribution;
}

const EMPTY: Contribution = {
  services: new Map(),
  slices: new Map(),
  nodes: new Map(),
  serviceCIDRs: new Map(),
};

function contributionOf(objects: ManifestObjects): Contribution {
  return {
    services: new Map(objects.services.map((s) => [namespacedName(s.metadata), s])),
    slices: new Map(objects.endpointSlices.map((s) => [namespacedName(s.metadata), s])),
    nodes: new Map(objects.nodes.map((n) => [n.metadata.name, n])),
    serviceCIDRs: new Map(objects.serviceCIDRs.map((c) => [c.metadata.name, c])),
  };
}

/** `previous` with every object of `next` laid over it: nothing of `previous` is deleted. */
function overlay(previous: Contribution, next: Contribution): Contribution {
  return {
    services: new Map([...previous.services, ...next.services]),
    slices: new Map([...previous.slices, ...next.slices]),
    nodes: new Map([...previous.nodes, ...next.nodes]),
    serviceCIDRs: new Map([...previous.serviceCIDRs, ...next.serviceCIDRs]),
  };
}

/**
 * Every file's objects, a later file's replacing an earlier one's (as `overlay` file after file),
 * in one pass: overlaying file by file copied the growing maps once per file (quadratic in the
 * number of files), just before the first sync.
 */
function mergeFiles(files: Iterable<FileState>): Contribution {
  const services = new Map<string, Service>();
  const slices = new Map<string, EndpointSlice>();
  const nodes = new Map<string, Node>();
  const serviceCIDRs = new Map<string, ServiceCIDR>();
  for (const { objects } of files) {
    for (const [key, obj] of objects.services) services.set(key, obj);
    for (const [key, obj] of objects.slices) slices.set(key, obj);
    for (const [key, obj] of objects.nodes) nodes.set(key, obj);
    for (const [key, obj] of objects.serviceCIDRs) serviceCIDRs.set(key, obj);
  }
  return { services, slices, nodes, serviceCIDRs };
}

/**
 * Standalone source: a folder of Service/EndpointSlice/Node/ServiceCIDR manifests. The folder is watched
 * (fs.watch) and, because inotify misses some editors' rename dances and network filesystems,
 * also polled slowly; either way only the listing is read and each file `stat`ed, and a file is
 * parsed again only when its mtime, size or inode changed.
 *
 * An object's previous valid version stays until a valid new version or a real deletion
 * arrives: a file that is not YAML, cannot be read, is empty (a writer between truncate and
 * write) or holds an invalid object keeps every object it had; an object disappears only when
 * its file is removed or a file without problems no longer lists it. Each problem is logged
 * once, when the file changes, naming the file, object and field.
 *
 * The folder itself must be readable: if it is missing or cannot be listed, at start or later,
 * the source fails, and the daemon stops with its rules in place.
 */
export class DirectorySource implements Source {
  private files = new Map<string, FileState>();
  private current: Contribution = EMPTY;
  /** The ServiceCIDR union last reported; null before the first scan. */
  private reportedCIDRs: string | null = null;

  constructor(
    private readonly dir: string,
    private readonly nodeName: string,
    private readonly log: Logger,
    private readonly pollMs = 10_000,
    private readonly settleMs = 100,
  ) {}

  async start(handlers: SourceHandlers, signal: AbortSignal): Promise<void> {
    await this.rescan(handlers);
    handlers.onSynced();
    // Stopped during the first scan (the mode failed its platform checks): an abort listener
    // added now would never fire.
    if (signal.aborted) return;
    let timer: NodeJS.Timeout | null = null;
    let running: Promise<void> = Promise.resolve();
    let failed: (err: unknown) => void = () => undefined;
    const failure = new Promise<never>((_, reject) => (failed = reject));
    // Keeps an early failure from being reported as unhandled before the race below.
    failure.catch(() => undefined);
    const schedule = (delay: number) => {
      if (signal.aborted) return;
      if (timer !== null) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        running = running.then(() => this.rescan(handlers)).catch(failed);
      }, delay);
    };
    const watcher = watch(this.dir, { signal }, () => schedule(this.settleMs));
    watcher.on("error", (err) => {
      this.log.warn({ err, dir: this.dir }, "Watching the manifests folder failed; polling only");
      schedule(0);
    });
    const poll = setInterval(() => schedule(0), this.pollMs);
    const aborted = new Promise<void>((resolve) =>
      signal.addEventListener("abort", () => resolve(), { once: true }),
    );
    try {
      await Promise.race([aborted, failure]);
    } finally {
      clearInterval(poll);
      watcher.close();
      if (timer !== null) clearTimeout(timer);
    }
    await running;
  }

  /** Lists the folder, re-reads the files that changed, and emits what changed overall. */
  private async rescan(handlers: SourceHandlers): Promise<void> {
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter(isManifestFile).sort();
    } catch (cause) {
      throw new InputError(this.dir, `cannot read the manifests folder: ${(cause as Error).message}`, {
        cause,
      });
    }
    const next = new Map<string, FileState>();
    let changed = false;
    for (const name of names) {
      const previous = this.files.get(name);
      const state = await this.readFile(name, previous);
      if (state === null) continue;
      if (state !== previous) changed = true;
      next.set(name, state);
    }
    // Same size and no new or changed file: nothing was removed either.
    if (!changed && next.size === this.files.size && this.reportedCIDRs !== null) return;
    this.files = next;
    const merged = mergeFiles(next.values());
    diff(this.current.services, merged.services, (a, b) => handlers.onService(a, b));
    diff(this.current.slices, merged.slices, (a, b) => handlers.onEndpointSlice(a, b));
    const before = this.current.nodes.get(this.nodeName) ?? null;
    const after = merged.nodes.get(this.nodeName) ?? null;
    if (JSON.stringify(before) !== JSON.stringify(after)) handlers.onNode(after);
    const cidrs = serviceCIDRUnion(merged.serviceCIDRs.values());
    if (cidrs.join(",") !== this.reportedCIDRs) {
      this.reportedCIDRs = cidrs.join(",");
      handlers.onServiceCIDRs(cidrs);
    }
    this.current = merged;
  }

  /** The file's state: `previous` itself when unchanged, null when it is not a regular file. */
  private async readFile(name: string, previous: FileState | undefined): Promise<FileState | null> {
    const path = join(this.dir, name);
    const kept = previous?.objects ?? EMPTY;
    let info;
    try {
      info = await stat(path);
    } catch (err) {
      // Removed between the listing and now: a deletion like any other.
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
    if (!info.isFile()) return null;
    if (
      previous !== undefined &&
      previous.mtimeMs === info.mtimeMs &&
      previous.size === info.size &&
      previous.ino === info.ino
    )
      return previous;
    const seen = { mtimeMs: info.mtimeMs, size: info.size, ino: info.ino };
    const tooBig = oversizedManifest(path, info.size);
    if (tooBig !== null) {
      this.log.error(
        { file: path, error: tooBig.message },
        "Manifests file too large; keeping its previous objects",
      );
      return { ...seen, objects: kept };
    }
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (err) {
      this.log.error(
        { file: path, error: (err as Error).message },
        "Cannot read manifests file; keeping its previous objects",
      );
      return { ...seen, objects: kept };
    }
    if (text.trim() === "") {
      this.log.warn(
        { file: path },
        "Manifests file is empty; keeping its previous objects until it has content or is removed",
      );
      return { ...seen, objects: kept };
    }
    let objects: ManifestObjects;
    try {
      objects = parseManifests(text, path);
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      this.log.error(
        { file: path, error: err.message },
        "Invalid manifests file; keeping its previous objects",
      );
      return { ...seen, objects: kept };
    }
    for (const problem of objects.problems) {
      this.log.warn(
        { file: path, object: problem.object, field: problem.field },
        `Skipping invalid object: ${problem.reason}; keeping the file's previous objects`,
      );
    }
    const valid = contributionOf(objects);
    return { ...seen, objects: objects.problems.length === 0 ? valid : overlay(kept, valid) };
  }
}

function diff<T>(
  before: ReadonlyMap<string, T>,
  after: ReadonlyMap<string, T>,
  emit: (previous: T | null, current: T | null) => void,
): void {
  for (const [key, old] of before) if (!after.has(key)) emit(old, null);
  for (const [key, obj] of after) {
    const old = before.get(key);
    if (old === undefined) emit(null, obj);
    else if (old !== obj && JSON.stringify(old) !== JSON.stringify(obj)) emit(old, obj);
  }
}
