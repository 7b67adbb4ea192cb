/**
 * 1,000 Services × 10 endpoints through the real writer into a real kernel (its own namespace):
 * the first full sync into the absent table goes in bounded transactions (as the writer plans it),
 * the second full sync over the table it knows too, a one-endpoint change afterwards is a
 * small partial transaction, and the kernel then holds exactly the rendered chains. Prints the
 * render, plan and apply times (docs/nftables-mode.md quotes them).
 */
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { test } from "node:test";
import { pino } from "pino";
import { NftablesWriter, servicesPerTransaction } from "../../../src/backends/nftables/proxier.ts";
import { readTableOverNetlink } from "../../../src/backends/nftables/netlink-kernel.ts";
import { renderNftables } from "../../../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { planChunkedFullSync } from "../../../src/backends/nftables/transactions.ts";
import { Nft, parseObjectNames } from "../../../src/kernel/nft.ts";
import { realClock } from "../../../src/proxy/clock.ts";
import type { Endpoint, ServicePort } from "../../../src/proxy/types.ts";
import { endpoint, proxyState, servicePort } from "../../support/iptables-builders.ts";
import { runner, withNetns } from "../../support/netns.ts";

const SERVICES = 1_000;
const ENDPOINTS = 10;

function scaleState(changedService = -1) {
  const entries: Array<[ServicePort, Endpoint[]]> = [];
  for (let i = 0; i < SERVICES; i++) {
    const sp = servicePort({
      namespace: `ns${i % 20}`,
      name: `svc${i}`,
      portName: "http",
      clusterIP: `172.30.${i >> 8}.${i & 255}`,
      nodePort: i % 2 === 0 ? 30000 + i : 0,
    });
    const eps: Endpoint[] = [];
    for (let j = 0; j < ENDPOINTS; j++) {
      const n = i * ENDPOINTS + j + (i === changedService && j === 0 ? 200_000 : 0);
      eps.push(endpoint(`10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, 8080));
    }
    entries.push([sp, eps]);
  }
  return proxyState(entries);
}

const ms = (start: number): number => Math.round(performance.now() - start);

test(`${SERVICES} Services × ${ENDPOINTS} endpoints: one nft -f transaction, then a small partial sync`, async (t) => {
  await withNetns(async (netns) => {
    const settings = upstreamTestSettings("IPv4");
    const state = scaleState();

    let start = performance.now();
    const ruleset = renderNftables({ state, settings });
    const renderMs = ms(start);
    start = performance.now();
    // What the writer plans for a table that is not there yet: chunked, as the writer cuts it.
    const plan = planChunkedFullSync(ruleset, null, null, true, {
      resetBaseChains: true,
      servicesPerTransaction: servicesPerTransaction(ruleset.services.length),
    });
    const planMs = ms(start);
    assert.ok(plan !== null, "a 1,000-Service full sync into an absent table is chunked");

    const nft = new Nft(runner, netns);
    let applyMs = 0;
    const writer = new NftablesWriter({
      kernel: {
        apply: async ({ payload }) => {
          const began = performance.now();
          await nft.apply(payload);
          applyMs += ms(began);
        },
        read: () => readTableOverNetlink({ family: "ip", netns }),
      },
      settings,
      clock: realClock,
      log: pino({ level: "silent" }),
    });
    start = performance.now();
    applyMs = 0;
    const first = await writer.write({
      state,
      fullSync: true,
      changedServices: new Set(),
      onTransaction: () => {},
    });
    const firstTotalMs = ms(start);
    const firstApplyMs = applyMs;
    assert.equal(first.details.operations, plan.operations);

    start = performance.now();
    applyMs = 0;
    await writer.write({ state, fullSync: true, changedServices: new Set(), onTransaction: () => {} });
    const secondTotalMs = ms(start);
    const secondApplyMs = applyMs;

    // As the state store does: unchanged Services keep their objects, svc7 gets a new endpoint list.
    const other = scaleState(7);
    const key7 = [...other.services.keys()].find((k) => k.startsWith("ns7/svc7:"))!;
    const endpoints = new Map(state.endpoints);
    endpoints.set(key7, other.endpoints.get(key7)!);
    const changed = { ...state, endpoints };
    start = performance.now();
    applyMs = 0;
    const partial = await writer.write({
      state: changed,
      fullSync: false,
      changedServices: new Set(["ns7/svc7"]),
      onTransaction: () => {},
    });
    const partialTotalMs = ms(start);
    const partialApplyMs = applyMs;

    const chains = parseObjectNames(
      (await runner.run(["nft", "-j", "list", "chains", "ip"], { netns, timeoutMs: 120_000 })).stdout,
      "chain",
      "kube-proxy",
    );
    const serviceChains = chains.filter((c) => c.includes("/"));
    // Per Service: service-, 10 endpoint- and, for NodePort ones, external-; plus the stale old endpoint chain.
    assert.equal(serviceChains.length, SERVICES * (1 + ENDPOINTS) + SERVICES / 2 + 1);
    // The changed Service's 11 chains rewritten whole (add, flush, 2 rules each), the old endpoint's
    // chain flushed, no element changed: nothing of the other 999 Services is sent.
    assert.equal(partial.details.operations, 11 * 4 + 1);

    const report = {
      payloadBytes: plan.payload.length,
      operations: plan.operations,
      renderMs,
      planMs,
      firstFullSync: { totalMs: firstTotalMs, nftApplyMs: firstApplyMs },
      secondFullSync: { totalMs: secondTotalMs, nftApplyMs: secondApplyMs },
      oneEndpointChanged: {
        operations: partial.details.operations,
        totalMs: partialTotalMs,
        nftApplyMs: partialApplyMs,
      },
    };
    t.diagnostic(JSON.stringify(report));
  });
});
