import assert from "node:assert/strict";
import { test } from "node:test";
import { NO_ENDPOINTS, ServicePortMemo } from "../../../src/proxy/memo.ts";
import type { Endpoint, ServicePort } from "../../../src/proxy/types.ts";

test("ServicePortMemo: a hit needs the same ServicePort, endpoint list and inputs, by identity", () => {
  const memo = new ServicePortMemo<string>();
  const sp = {} as ServicePort;
  const settings = { mark: "0x4000" };
  let renders = 0;
  const render = () => `out ${++renders}`;
  assert.equal(memo.get(sp, NO_ENDPOINTS, [settings, true], render), "out 1");
  assert.equal(memo.get(sp, NO_ENDPOINTS, [settings, true], render), "out 1");
  // An equal but new settings object, another endpoint list, another input, another arity: misses.
  assert.equal(memo.get(sp, NO_ENDPOINTS, [{ mark: "0x4000" }, true], render), "out 2");
  const endpoints: readonly Endpoint[] = [];
  assert.equal(memo.get(sp, endpoints, [settings, true], render), "out 3");
  assert.equal(memo.get(sp, endpoints, [settings, false], render), "out 4");
  assert.equal(memo.get(sp, endpoints, [settings], render), "out 5");
  // Another ServicePort has its own entry.
  assert.equal(memo.get({} as ServicePort, endpoints, [settings], render), "out 6");
  assert.equal(memo.get(sp, endpoints, [settings], render), "out 5");
});
