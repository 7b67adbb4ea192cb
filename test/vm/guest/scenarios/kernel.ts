import assert from "node:assert/strict";
import { test } from "node:test";
import { readFileSync } from "node:fs";

test("the VM kernel has IPVS", () => {
  assert.match(readFileSync("/proc/net/ip_vs", "utf8"), /IP Virtual Server/);
});
