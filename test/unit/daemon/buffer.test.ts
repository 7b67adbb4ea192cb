import assert from "node:assert/strict";
import { test } from "node:test";
import { HandlerBuffer } from "../../../src/daemon/buffer.ts";
import type { EndpointSlice, Node, Service } from "../../../src/k8s/objects.ts";
import type { SourceHandlers } from "../../../src/source/types.ts";

/** Handlers that write down what they receive, in order. */
function recorder(): { handlers: SourceHandlers; seen: string[] } {
  const seen: string[] = [];
  const name = (o: { metadata: { name: string } } | null) => o?.metadata.name ?? "-";
  return {
    seen,
    handlers: {
      onService: (p, c) => seen.push(`svc ${name(p)}→${name(c)}`),
      onEndpointSlice: (p, c) => seen.push(`slice ${name(p)}→${name(c)}`),
      onNode: (n) => seen.push(`node ${name(n)}`),
      onServiceCIDRs: (cidrs) => seen.push(`cidrs ${cidrs?.join(",") ?? "absent"}`),
      onSynced: () => seen.push("synced"),
    },
  };
}

const svc = (name: string) => ({ metadata: { name } }) as Service;
const slice = (name: string) => ({ metadata: { name } }) as EndpointSlice;
const node = (name: string) => ({ metadata: { name } }) as Node;

test("events before attach are held and replayed in order, later ones pass straight through", () => {
  const buffer = new HandlerBuffer();
  buffer.onNode(node("n1"));
  buffer.onService(null, svc("a"));
  buffer.onEndpointSlice(null, slice("a-1"));
  buffer.onService(svc("a"), svc("a2"));
  buffer.onServiceCIDRs(["10.96.0.0/16"]);
  buffer.onSynced();
  const { handlers, seen } = recorder();
  assert.deepEqual(seen, []);
  buffer.attach(handlers);
  assert.deepEqual(seen, ["node n1", "svc -→a", "slice -→a-1", "svc a→a2", "cidrs 10.96.0.0/16", "synced"]);
  buffer.onEndpointSlice(slice("a-1"), null);
  buffer.onNode(null);
  buffer.onServiceCIDRs(null);
  assert.deepEqual(seen.slice(6), ["slice a-1→-", "node -", "cidrs absent"]);
});

test("an event a replayed handler causes is delivered after the held ones", () => {
  const buffer = new HandlerBuffer();
  buffer.onService(null, svc("a"));
  const { handlers, seen } = recorder();
  buffer.attach({
    ...handlers,
    onService: (p, c) => {
      handlers.onService(p, c);
      if (c?.metadata.name === "a") buffer.onSynced();
    },
  });
  assert.deepEqual(seen, ["svc -→a", "synced"]);
});
