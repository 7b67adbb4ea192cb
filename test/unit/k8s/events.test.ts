import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import { EventRecorder, microTime, nodeRef, type EventSink } from "../../../src/k8s/events.ts";

function recordingSink(fail = false) {
  const calls: Array<{ method: string; path: string; body: unknown }> = [];
  const sink: EventSink = {
    request(method, path, opts) {
      calls.push({ method, path, body: opts.body });
      return fail ? Promise.reject(new Error("apiserver down")) : Promise.resolve({});
    },
  };
  return { sink, calls };
}

test("microTime prints Go's metav1.MicroTime: UTC, six fractional digits", () => {
  assert.equal(microTime(Date.UTC(2026, 10, 25, 21, 40, 5, 123)), "2026-11-25T21:40:05.123000Z");
});

test("a Node event goes to the default namespace with upstream's reporting fields", async () => {
  const { sink, calls } = recordingSink();
  const recorder = new EventRecorder(sink, "node-1", pino({ level: "silent" }), () =>
    Date.UTC(2026, 0, 2, 3, 4, 5),
  );
  await recorder.eventf(nodeRef("node-1"), "Normal", "Starting", "StartKubeProxy", "");
  assert.equal(calls.length, 1);
  assert.equal(calls[0]?.method, "POST");
  assert.equal(calls[0]?.path, "/apis/events.k8s.io/v1/namespaces/default/events");
  const body = calls[0]?.body as Record<string, unknown>;
  assert.equal(body["apiVersion"], "events.k8s.io/v1");
  assert.equal(body["reportingController"], "kube-proxy");
  assert.equal(body["reportingInstance"], "kube-proxy-node-1");
  assert.deepEqual(body["regarding"], { kind: "Node", name: "node-1", uid: "node-1" });
  assert.equal(body["eventTime"], "2026-01-02T03:04:05.000000Z");
  assert.match(String((body["metadata"] as Record<string, unknown>)["name"]), /^node-1\.[0-9a-f]+$/);
});

test("a Service event goes to the Service's namespace; names never repeat", async () => {
  const { sink, calls } = recordingSink();
  const recorder = new EventRecorder(sink, "n", pino({ level: "silent" }), () => 1000);
  const svc = { kind: "Service", apiVersion: "v1", namespace: "shop", name: "web" };
  await recorder.eventf(svc, "Warning", "FailedToStartServiceHealthcheck", "Listen", "port in use");
  await recorder.eventf(svc, "Warning", "FailedToStartServiceHealthcheck", "Listen", "port in use");
  assert.equal(calls[0]?.path, "/apis/events.k8s.io/v1/namespaces/shop/events");
  const names = calls.map(
    (c) => ((c.body as Record<string, unknown>)["metadata"] as Record<string, unknown>)["name"],
  );
  assert.notEqual(names[0], names[1]);
});

test("a failed post is logged, never thrown", async () => {
  const { sink } = recordingSink(true);
  const warnings: unknown[] = [];
  const log = pino({ level: "warn" }, { write: (line: string) => warnings.push(JSON.parse(line)) });
  await new EventRecorder(sink, "n", log).eventf(nodeRef("n"), "Normal", "Starting", "StartKubeProxy", "");
  assert.equal(warnings.length, 1);
  assert.match(JSON.stringify(warnings[0]), /Failed to record event/);
});
