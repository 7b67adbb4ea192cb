import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ApiError, SERVICES } from "../../../src/k8s/client.ts";
import type {
  ListOptions,
  ListPage,
  ListWatchClient,
  ResourceRef,
  WatchEvent,
  WatchOptions,
} from "../../../src/k8s/client.ts";
import { Informer } from "../../../src/k8s/informer.ts";
import type { InformerNotice } from "../../../src/k8s/informer.ts";

const svc = (name: string, rv: string): unknown => ({
  metadata: { name, namespace: "default", uid: name, resourceVersion: rv },
});

/** Scripted answers: each list and each watch takes the next entry (an error is thrown). */
class ScriptedClient implements ListWatchClient {
  readonly watchedFrom: string[] = [];
  constructor(
    private readonly lists: (ListPage | Error)[],
    private readonly watches: (WatchEvent[] | Error)[],
    private readonly onExhausted: () => void,
  ) {}
  async listAll(_r: ResourceRef, _o?: ListOptions): Promise<ListPage> {
    const next = this.lists.shift();
    if (next === undefined) throw new Error("unexpected list");
    if (next instanceof Error) throw next;
    return next;
  }
  async *watch(_r: ResourceRef, opts: WatchOptions): AsyncGenerator<WatchEvent> {
    this.watchedFrom.push(opts.resourceVersion);
    const next = this.watches.shift();
    if (next === undefined) {
      this.onExhausted();
      return;
    }
    if (next instanceof Error) throw next;
    yield* next;
  }
}

const noSleep = { now: () => 0, sleep: async () => undefined };

describe("Informer (scripted client)", () => {
  test("skips objects without metadata, follows bookmarks, backs off on a non-410 ERROR event", async () => {
    const abort = new AbortController();
    const client = new ScriptedClient(
      [{ items: [svc("a", "5"), { metadata: {} }, "garbage"], resourceVersion: "7", continue: undefined }],
      [
        [
          { type: "BOOKMARK", object: { metadata: { resourceVersion: "9" } } },
          { type: "ADDED", object: { spec: {} } },
          { type: "ERROR", error: new ApiError(500, "InternalError", "etcd hiccup") },
        ],
        [{ type: "MODIFIED", object: svc("a", "12") }],
      ],
      () => abort.abort(),
    );
    const notices: InformerNotice[] = [];
    const calls: string[] = [];
    const informer = new Informer(
      client,
      SERVICES,
      {
        onAdd: (o) => void calls.push(`add ${o.meta.name}@${o.meta.resourceVersion}`),
        onUpdate: (a, b) => void calls.push(`update ${a.meta.resourceVersion}->${b.meta.resourceVersion}`),
        onDelete: (o) => void calls.push(`delete ${o.meta.name}`),
        onSynced: () => void calls.push("synced"),
      },
      { clock: noSleep, onNotice: (n) => notices.push(n), random: () => 0 },
    );
    await informer.run(abort.signal);
    assert.deepEqual(calls, ["add a@5", "synced", "update 5->12"]);
    assert.deepEqual(
      client.watchedFrom,
      ["7", "9", "12"],
      "list version, then the bookmark's, then the last event's",
    );
    assert.deepEqual(
      notices.map((n) => (n.kind === "invalid-object" ? `${n.kind} ${n.error.field}` : n.kind)),
      ["invalid-object metadata.name", "invalid-object metadata", "invalid-object metadata", "watch-failed"],
    );
    assert.equal(informer.resourceVersion, "12");
  });

  test("list failures retry with back-off; a throwing handler surfaces instead of looping", async () => {
    const abort = new AbortController();
    const client = new ScriptedClient(
      [
        new ApiError(0, "ConnectionFailed", "refused"),
        { items: [svc("a", "1")], resourceVersion: "1", continue: undefined },
      ],
      [],
      () => abort.abort(),
    );
    const notices: InformerNotice[] = [];
    const informer = new Informer(
      client,
      SERVICES,
      {
        onAdd: () => {
          throw new Error("handler bug");
        },
        onUpdate: () => undefined,
        onDelete: () => undefined,
        onSynced: () => undefined,
      },
      { clock: noSleep, onNotice: (n) => notices.push(n) },
    );
    await assert.rejects(informer.run(abort.signal), /handler bug/);
    assert.deepEqual(
      notices.map((n) => n.kind),
      ["list-failed"],
    );
  });
});
