/**
 * A YAML alias inside the node it names (`metadata: &m {self: *m}`) parses into an object that
 * contains itself. Such a manifest must be reported as an invalid object, not crash the reader
 * with a TypeError from JSON.stringify. Found by the fuzz campaign (docs/reliability.md).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { InvalidObjectError } from "../../../src/errors.ts";
import { decodeService } from "../../../src/k8s/objects.ts";
import { parseManifests } from "../../../src/source/manifests.ts";

const TEXT = [
  "kind: Service",
  "metadata: &m",
  "  name: web",
  "  namespace: default",
  "  self: *m",
  "spec:",
  "  clusterIP: 10.0.0.1",
  "  ports: [{port: 80}]",
  "",
].join("\n");

test("a manifest whose YAML alias contains itself is a reported problem, not a crash", () => {
  const out = parseManifests(TEXT, "web.yaml");
  assert.equal(out.services.length, 0);
  assert.equal(out.problems.length, 1);
  const problem = out.problems[0]!;
  assert.ok(problem instanceof InvalidObjectError);
  assert.equal(problem.object, "Service default/web");
  assert.equal(problem.field, "(object)");
  assert.match(problem.reason, /contains itself/);
});

test("a self-containing object handed to a decoder is refused with KPT_INVALID_OBJECT", () => {
  const raw: Record<string, unknown> = { metadata: { name: "web", namespace: "default" }, spec: {} };
  raw["spec"] = { loop: raw };
  assert.throws(() => decodeService(raw, "test"), InvalidObjectError);
});
