import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeService } from "../../../src/k8s/objects.ts";
import { array, DecodeFailure, integer, object, oneOf, optional, string } from "../../../src/k8s/decode.ts";

function failure(fn: () => unknown): DecodeFailure {
  try {
    fn();
  } catch (err) {
    if (err instanceof DecodeFailure) return err;
    throw err;
  }
  assert.fail("expected a DecodeFailure");
}

test("the first problem is reported with the path to it, outermost key first", () => {
  const d = object({ spec: object({ ports: array(object({ port: integer(1, 65535) })) }) });
  const f = failure(() => d({ spec: { ports: [{ port: 80 }, { port: 0 }] } }));
  assert.deepEqual(f.path, ["spec", "ports", 1, "port"]);
  assert.equal(f.reason, "must be an integer from 1 to 65535");
});

test("unknown fields are dropped; absent and null both mean unset", () => {
  const d = object({ a: optional(string), b: optional(string) });
  assert.deepEqual(d({ a: null, c: "x" }), { a: undefined, b: undefined });
});

test("type errors name what was found", () => {
  assert.equal(failure(() => string(3)).reason, "must be a string, not a number");
  assert.equal(failure(() => object({})([])).reason, "must be an object, not an array");
  assert.equal(failure(() => array(string)({})).reason, "must be a list, not an object");
  assert.equal(failure(() => oneOf(["TCP", "UDP"])("tcp")).reason, 'must be one of "TCP", "UDP"');
  assert.equal(failure(() => array(string, 2)(["a", "b", "c"])).reason, "must have no more than 2 items");
});

test("Service messages read as the API server's validation would", () => {
  const svc = (spec: Record<string, unknown>) => ({
    metadata: { name: "s", namespace: "ns" },
    spec: { clusterIP: "10.0.0.1", ...spec },
  });
  assert.throws(
    () => decodeService(svc({ ports: [{ port: 80 }, { port: 81 }] }), "f.yaml"),
    /^InvalidObjectError: Service ns\/s: spec\.ports\[0\]\.name: required when a Service has more than one port$/,
  );
  assert.throws(
    () =>
      decodeService(
        svc({
          ports: [
            { name: "a", port: 80 },
            { name: "a", port: 81 },
          ],
        }),
        "f.yaml",
      ),
    /spec\.ports\[1\]\.name: duplicate port name "a"$/,
  );
  assert.throws(
    () => decodeService(svc({ ports: [{ name: "A", port: 80 }] }), "f.yaml"),
    /spec\.ports\[0\]\.name: must be a DNS-1123 label/,
  );
  assert.throws(
    () => decodeService({ metadata: { name: "x".repeat(64), namespace: "ns" }, spec: {} }, "f.yaml"),
    /metadata\.name: must be no more than 63 characters$/,
  );
});
