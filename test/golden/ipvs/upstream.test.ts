/**
 * Upstream's ipvs proxier tests as goldens (test/golden/ipvs/cases.yaml, inputs in
 * test/fixtures/ipvs/): real Kubernetes YAML → model → renderer, checked the way upstream's
 * test checks its fake IPVS, fake ipset and fake iptables.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { renderIpvs, virtualServerKey, realServerKey } from "../../../src/backends/ipvs/render.ts";
import { upstreamTestSettings } from "../../../src/backends/ipvs/settings.ts";
import type { IpvsDesiredState } from "../../../src/backends/ipvs/types.ts";
import { familyOf, type IPFamily } from "../../../src/ip.ts";
import { parse } from "yaml";
import { loadIpvsState } from "../../support/ipvs-golden.ts";

const FIXTURES = new URL("../../fixtures/ipvs/", import.meta.url);

interface RuleExpectation {
  readonly jump: string;
  readonly matchSet?: string;
  readonly source?: string;
}

interface Case {
  readonly name: string;
  readonly input: string;
  readonly family: IPFamily;
  readonly nodeIPs: readonly string[];
  readonly nodePortAddresses: readonly string[];
  readonly ipvs?: Readonly<Record<string, readonly string[]>>;
  readonly ipvsCount?: number;
  readonly ipvsSome?: Readonly<Record<string, readonly string[]>>;
  readonly ipsets?: Readonly<Record<string, readonly string[]>>;
  readonly iptables?: Readonly<Record<string, readonly RuleExpectation[]>>;
  readonly noLocalEndpoints?: { readonly internal: number; readonly external: number };
}

const CASES = parse(readFileSync(new URL("cases.yaml", import.meta.url), "utf8")) as Case[];

/** Virtual servers with their real servers, as upstream's fake IPVS holds them. */
function ipvsOf(desired: IpvsDesiredState): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const d of desired.virtualServers) {
    assert.equal(d.vs.scheduler, "rr");
    assert.equal(d.vs.persistence, 0);
    for (const rs of d.realServers) assert.equal(rs.weight, 1);
    out.set(virtualServerKey(d.vs), d.realServers.map(realServerKey).sort());
  }
  return out;
}

/** Upstream's `GetRules(chain)`: the chain's rules in every table, nat first. */
function rulesOf(payload: string, chain: string): RuleExpectation[] {
  const out: RuleExpectation[] = [];
  for (const line of payload.split("\n")) {
    const words = line.split(" ");
    if (words[0] !== "-A" || words[1] !== chain) continue;
    const after = (flag: string): string | undefined => {
      const i = words.indexOf(flag);
      return i < 0 || words[i - 1] === "!" ? undefined : words[i + 1];
    };
    out.push({
      jump: after("-j")!,
      ...(after("--match-set") === undefined ? {} : { matchSet: after("--match-set")! }),
      ...(after("-s") === undefined ? {} : { source: after("-s")! }),
    });
  }
  return out;
}

for (const c of CASES) {
  test(c.name, () => {
    const settings = { ...upstreamTestSettings(c.family), nodePortAddresses: c.nodePortAddresses };
    const text = readFileSync(new URL(c.input, FIXTURES), "utf8");
    const state = loadIpvsState(text, c.input, c.family, settings.nodeName);
    const desired = renderIpvs({
      state,
      settings,
      nodeAddresses: c.nodeIPs.filter((ip) => familyOf(ip) === c.family),
    });
    const ipvs = ipvsOf(desired);
    if (c.ipvs !== undefined) {
      const want = new Map(Object.entries(c.ipvs).map(([k, v]) => [k, [...v].sort()]));
      assert.deepEqual(ipvs, want);
    }
    if (c.ipvsCount !== undefined) assert.equal(ipvs.size, c.ipvsCount);
    for (const [vs, rs] of Object.entries(c.ipvsSome ?? {})) assert.deepEqual(ipvs.get(vs), [...rs].sort(), vs);
    for (const [name, entries] of Object.entries(c.ipsets ?? {})) {
      const set = desired.ipsets.find((s) => s.name === name);
      assert.ok(set !== undefined, `set ${name} exists`);
      assert.deepEqual(set.entries, [...entries].sort(), name);
    }
    for (const [chain, rules] of Object.entries(c.iptables ?? {})) {
      assert.deepEqual(rulesOf(desired.iptables, chain), rules, chain);
    }
    if (c.noLocalEndpoints !== undefined) assert.deepEqual(desired.noLocalEndpoints, c.noLocalEndpoints);
  });
}

test("every set upstream creates is in every state, with upstream's types", () => {
  const state = loadIpvsState("", "empty", "IPv4", "test-node");
  const desired = renderIpvs({ state, settings: upstreamTestSettings("IPv4"), nodeAddresses: [] });
  assert.equal(desired.ipsets.length, 17);
  assert.ok(desired.ipsets.every((s) => s.entries.length === 0));
  const v6 = renderIpvs({ state: loadIpvsState("", "empty", "IPv6", "test-node"), settings: upstreamTestSettings("IPv6"), nodeAddresses: [] });
  assert.ok(v6.ipsets.every((s) => s.name.startsWith("KUBE-6-") && s.name.length <= 31));
  assert.ok(v6.ipsets.some((s) => s.name === "KUBE-6-LOAD-BALANCER-SOURCE-CID"), "cut to ipset's 31 characters");
});
