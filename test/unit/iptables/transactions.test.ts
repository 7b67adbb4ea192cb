import assert from "node:assert/strict";
import { test } from "node:test";
import {
  renderIptables,
  renderIptablesStream,
  writtenServicePorts,
} from "../../../src/backends/iptables/render.ts";
import { restoreTransactions } from "../../support/transactions.ts";
import type { RenderRequest } from "../../../src/backends/iptables/types.ts";
import { endpoint, FAKE_PROXIER_SETTINGS, proxyState, servicePort } from "../../support/iptables-builders.ts";

function request(services: number, changed: readonly number[] | null = null): RenderRequest {
  const state = proxyState(
    Array.from({ length: services }, (_, i) => [
      servicePort({
        namespace: "ns",
        name: `svc${i}`,
        clusterIP: `172.30.${Math.floor(i / 250)}.${i % 250}`,
      }),
      [endpoint(`10.1.${Math.floor(i / 250)}.${i % 250}`, 80)],
    ]),
  );
  return {
    state,
    settings: FAKE_PROXIER_SETTINGS,
    fullSync: changed === null,
    changedServices: new Set((changed ?? []).map((i) => `ns/svc${i}`)),
    existingNatChains: [],
  };
}

/** Services per transaction: the `-A KUBE-SVC-` chains' first rules each transaction carries. */
const servicesPer = (transactions: readonly string[]) =>
  transactions.map((t) => new Set(t.match(/^:KUBE-SVC-\S+/gm) ?? []).size);

test("up to the maximum, a sync is upstream's single payload", () => {
  const result = renderIptables(request(250));
  assert.deepEqual(restoreTransactions(result, 250), [result.payload]);
});

test("above it, chunks start at 50 Services and double up to the maximum, then the top level", () => {
  const sizes = servicesPer(restoreTransactions(renderIptables(request(1000)), 250));
  assert.deepEqual(sizes.slice(0, -1), [50, 100, 200, 250, 250, 150]);
  const top = restoreTransactions(renderIptables(request(1000)), 250).at(-1) ?? "";
  assert.match(top, /^\*filter\n[\s\S]*^-A KUBE-SERVICES /m, "the last transaction swaps the capture rules");
  assert.deepEqual(
    servicesPer(restoreTransactions(renderIptables(request(251)), 250)).slice(0, -1),
    [50, 100, 101],
  );
  assert.deepEqual(
    servicesPer(restoreTransactions(renderIptables(request(7)), 2)).slice(0, -1),
    [2, 2, 2, 1],
  );
});

test("the stream yields exactly the blocks the sync writes, and writtenServicePorts counts them", () => {
  for (const req of [request(30), request(30, [3, 17, 29]), request(30, [])]) {
    const stream = renderIptablesStream(req);
    const yielded = [];
    let step = stream.next();
    for (; step.done !== true; step = stream.next()) yielded.push(step.value);
    const result = step.value(req.existingNatChains);
    assert.deepEqual(yielded, result.nat.serviceBlocks);
    assert.equal(yielded.length, writtenServicePorts(req));
    assert.deepEqual(result, renderIptables(req));
  }
});
