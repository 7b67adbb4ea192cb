import assert from "node:assert/strict";
import { test } from "node:test";
import {
  renderIptables,
  renderIptablesStream,
  writtenServicePorts,
} from "../../../src/backends/iptables/render.ts";
import { writtenTopLevel } from "../../../src/backends/iptables/transactions.ts";
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
    const result = step.value(req.existingNatChains, yielded);
    assert.deepEqual(yielded, result.nat.serviceBlocks);
    assert.equal(yielded.length, writtenServicePorts(req));
    assert.deepEqual(result, renderIptables(req));
  }
});

/** The transactions of a partial sync of one Service with `externalIPs`, after a sync that wrote `before`. */
function externalIPsChange(before: readonly string[], after: readonly string[]): string[] {
  const render = (externalIPs: readonly string[], fullSync: boolean) =>
    renderIptables({
      state: proxyState([
        [servicePort({ namespace: "ns", name: "svc", externalIPs }), [endpoint("10.1.0.1", 80)]],
      ]),
      settings: FAKE_PROXIER_SETTINGS,
      fullSync,
      changedServices: new Set(["ns/svc"]),
      existingNatChains: [],
    });
  return restoreTransactions(render(after, false), 250, writtenTopLevel(render(before, true)));
}

test("new rules are inserted at their places, behind the probe of the top-level chains", () => {
  const [edit, ...rest] = externalIPsChange(
    ["192.168.99.22"],
    ["192.168.99.11", "192.168.99.22", "192.168.99.33"],
  );
  assert.equal(rest.length, 0);
  assert.match(
    edit ?? "",
    /^\*nat\n:KUBE-PROXY-PROBE - \[0:0\]\n(-A KUBE-PROXY-PROBE -j \S+\n){3}-F KUBE-PROXY-PROBE\n-X KUBE-PROXY-PROBE\n/,
  );
  const lines = (edit ?? "").split("\n").filter((l) => /^-[AID] KUBE-SERVICES /.test(l));
  assert.deepEqual(
    lines.map((l) =>
      /^(-[AID] KUBE-SERVICES(?: \d+)?) .*?(192\.168\.99\.\d+|cluster IP)/.exec(l)?.slice(1).join(" "),
    ),
    ["-I KUBE-SERVICES 2 192.168.99.11", "-I KUBE-SERVICES 4 192.168.99.33"],
  );
});

test("rules that stay but change order, or a rule that repeats, make a rewrite instead of edits", () => {
  for (const [before, after] of [
    [
      ["192.168.99.11", "192.168.99.22"],
      ["192.168.99.22", "192.168.99.11"],
    ],
    [["192.168.99.11"], ["192.168.99.11", "192.168.99.11"]],
    [["192.168.99.11", "192.168.99.11"], ["192.168.99.11"]],
  ] as const) {
    const [payload] = externalIPsChange(before, after);
    assert.match(payload ?? "", /^:KUBE-SERVICES - \[0:0\]$/m, `${before.join(",")} → ${after.join(",")}`);
    assert.doesNotMatch(payload ?? "", /KUBE-PROXY-PROBE|^-[ID] /m);
  }
});
