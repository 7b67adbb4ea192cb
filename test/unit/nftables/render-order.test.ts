/**
 * The renderer keeps the last sync's service-port order and only sorts what changed into it
 * (render.ts `sortedPorts`). Whatever sequence of states it sees, the order must be the one a
 * full sort by compareServicePorts gives, including names that are prefixes of others.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { renderNftables } from "../../../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import {
  compareServicePorts,
  servicePortKey,
  type ProxyState,
  type ServicePort,
} from "../../../src/proxy/types.ts";
import { servicePort } from "../../support/iptables-builders.ts";

/** A small deterministic generator (no randomness in tests that must be repeatable). */
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

const NAMES = ["a", "a-b", "a.b", "ab", "svc", "svc-x", "svc0", "svc1", "z"];
const PORTS = ["", "http", "https", "p"];

function randomPort(rand: () => number, i: number): ServicePort {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  return servicePort({
    namespace: pick(["ns", "ns-a", "nsa"]),
    name: pick(NAMES),
    portName: pick(PORTS),
    protocol: pick(["TCP", "UDP"] as const),
    clusterIP: `172.30.${(i >> 8) & 255}.${i & 255}`,
  });
}

test("the service-port order is compareServicePorts order after any sequence of changes", () => {
  const settings = upstreamTestSettings("IPv4");
  const rand = lcg(12);
  let services = new Map<string, ServicePort>();
  let made = 0;
  for (let step = 0; step < 300; step++) {
    const next = new Map(services);
    const changes = 1 + Math.floor(rand() * (step % 10 === 0 ? 40 : 3));
    for (let c = 0; c < changes; c++) {
      const r = rand();
      const keys = [...next.keys()];
      if (r < 0.2 && keys.length > 0) next.delete(keys[Math.floor(rand() * keys.length)]!);
      else if (r < 0.4 && keys.length > 0) {
        // The same key, a new object (a changed Service).
        const key = keys[Math.floor(rand() * keys.length)]!;
        next.set(key, { ...next.get(key)! });
      } else {
        const sp = randomPort(rand, made++);
        next.set(servicePortKey(sp.name), sp);
      }
    }
    services = next;
    const state: ProxyState = { family: "IPv4", services, endpoints: new Map(), nodeLabels: {} };
    const got = renderNftables({ state, settings }).services.map((s) => s.elements[0]!.key);
    const want = [...services.values()].sort(compareServicePorts).map((sp) => sp.clusterIP);
    assert.deepEqual(got, want, `step ${step}`);
  }
});
