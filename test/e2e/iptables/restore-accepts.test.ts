/**
 * Every payload the renderer produces must be accepted by the real iptables-restore (and
 * ip6tables-restore), on both the nft and the legacy backend: the golden feature cases, the
 * built-in seed example, and randomly generated states. `--test` parses and checks each rule
 * against the kernel's matches and targets without committing anything.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import fc from "fast-check";
import { parse } from "yaml";
import { renderIptables } from "../../../src/backends/iptables/render.ts";
import type { IptablesSettings } from "../../../src/backends/iptables/types.ts";
import { renderCommand } from "../../../src/cli/render.ts";
import { ExecError } from "../../../src/kernel/exec.ts";
import type { FeatureGates } from "../../../src/proxy/serviceport.ts";
import type { ProxyState } from "../../../src/proxy/types.ts";
import { endpoint, FAKE_PROXIER_SETTINGS, proxyState, servicePort } from "../../support/iptables-builders.ts";
import { loadProxyState } from "../../support/iptables-golden.ts";
import { runner, withNetns } from "../../support/netns.ts";

const CASES = new URL("../../golden/iptables/cases/", import.meta.url);

interface Case {
  readonly name: string;
  readonly input?: string;
  readonly settings?: Partial<IptablesSettings>;
  readonly featureGates?: Partial<FeatureGates>;
  readonly existingNatChains?: readonly string[];
}

function renderFull(state: ProxyState, settings: IptablesSettings, existing: readonly string[] = []): string {
  return renderIptables({
    state,
    settings,
    fullSync: true,
    changedServices: new Set(),
    existingNatChains: existing,
  }).payload;
}

const BACKENDS = ["nft", "legacy"] as const;

async function restoreTest(
  netns: string,
  backend: (typeof BACKENDS)[number],
  family: "IPv4" | "IPv6",
  payload: string,
): Promise<void> {
  const tool = `${family === "IPv4" ? "iptables" : "ip6tables"}-${backend}-restore`;
  try {
    await runner.run([tool, "--test", "--noflush"], { netns, stdin: payload, timeoutMs: 60_000 });
  } catch (error) {
    if (error instanceof ExecError)
      assert.fail(`${tool} --test rejected the payload: ${error.stderr}\n${payload}`);
    throw error;
  }
}

test("iptables-restore --test accepts every rendered payload (goldens, seed example, random states)", async () => {
  const cases = (parse(readFileSync(new URL("index.yaml", CASES), "utf8")) as { cases: Case[] }).cases;
  const payloads: Array<{ name: string; family: "IPv4" | "IPv6"; payload: string }> = [];
  for (const c of cases) {
    const settings: IptablesSettings = { ...FAKE_PROXIER_SETTINGS, ...c.settings };
    const stem = c.input ?? c.name;
    const state = loadProxyState(
      readFileSync(new URL(`${stem}.yaml`, CASES), "utf8"),
      `${stem}.yaml`,
      settings,
      c.featureGates,
    );
    payloads.push({
      name: c.name,
      family: settings.family,
      payload: renderFull(state, settings, c.existingNatChains),
    });
  }
  payloads.push({ name: "seed example", family: "IPv4", payload: await renderCommand({}) });
  assert.ok(
    payloads.some((p) => p.family === "IPv6"),
    "the goldens include an IPv6 case",
  );

  const random = fc.sample(
    fc.record({
      services: fc.array(
        fc.record({
          port: fc.integer({ min: 1, max: 65535 }),
          nodePort: fc.oneof(fc.constant(0), fc.integer({ min: 30000, max: 32767 })),
          protocol: fc.constantFrom("TCP" as const, "UDP" as const, "SCTP" as const),
          affinity: fc.boolean(),
          local: fc.boolean(),
          lb: fc.boolean(),
          endpoints: fc.integer({ min: 0, max: 4 }),
        }),
        { minLength: 1, maxLength: 6 },
      ),
    }),
    { numRuns: 15, seed: 42 },
  );
  random.forEach((sample, i) => {
    const entries = sample.services.map((s, j) => {
      const sp = servicePort({
        namespace: "ns",
        name: `svc${j}`,
        portName: `p${j}`,
        clusterIP: `172.30.${i}.${j + 1}`,
        port: s.port,
        protocol: s.protocol,
        nodePort: s.nodePort,
        sessionAffinity: s.affinity ? { type: "ClientIP", maxAgeSeconds: 10800 } : null,
        externalPolicyLocal: s.local && (s.nodePort !== 0 || s.lb),
        loadBalancerVIPs: s.lb ? [`1.2.3.${j + 1}`] : [],
        loadBalancerSourceRanges: s.lb ? ["203.0.113.0/25"] : [],
      });
      const eps = Array.from({ length: s.endpoints }, (_, k) =>
        endpoint(`10.0.${j}.${k + 1}`, 8000 + k, { isLocal: k % 2 === 0 }),
      );
      return [sp, eps] as const;
    });
    payloads.push({
      name: `random #${i}`,
      family: "IPv4",
      payload: renderFull(proxyState(entries), FAKE_PROXIER_SETTINGS),
    });
  });

  await withNetns(async (netns) => {
    for (const counter of ["ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts"]) {
      await runner.run(["nfacct", "add", counter], { netns, timeoutMs: 10_000 });
    }
    for (const { name, family, payload } of payloads) {
      for (const backend of BACKENDS) {
        await restoreTest(netns, backend, family, payload).catch((error: unknown) => {
          throw new Error(`${name} (${family}, ${backend}): ${(error as Error).message}`);
        });
      }
    }
  });
});
