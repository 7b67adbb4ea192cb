/**
 * Feature goldens: each case is real Kubernetes YAML plus the expected restore input in
 * upstream's normalised form (docs/iptables.md §6.2). Provenance is stated in each expected file's header.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { renderIptables } from "../../../src/backends/iptables/render.ts";
import type { IptablesSettings } from "../../../src/backends/iptables/types.ts";
import type { FeatureGates } from "../../../src/proxy/serviceport.ts";
import { FAKE_PROXIER_SETTINGS } from "../../support/iptables-builders.ts";
import { checkIPTablesRuleJumps, sortIPTablesRules } from "../../support/iptables-normalise.ts";
import { loadProxyState } from "../../support/iptables-golden.ts";

const DIR = new URL("./cases/", import.meta.url);

interface Case {
  readonly name: string;
  /** Input file stem when several cases share one input. */
  readonly input?: string;
  readonly settings?: Partial<IptablesSettings>;
  readonly featureGates?: Partial<FeatureGates>;
  readonly existingNatChains?: readonly string[];
}

const cases = (parse(readFileSync(new URL("index.yaml", DIR), "utf8")) as { cases: Case[] }).cases;

for (const c of cases) {
  test(`iptables golden: ${c.name}`, () => {
    const settings: IptablesSettings = { ...FAKE_PROXIER_SETTINGS, ...c.settings };
    const yamlText = readFileSync(new URL(`${c.input ?? c.name}.yaml`, DIR), "utf8");
    const state = loadProxyState(yamlText, `${c.input ?? c.name}.yaml`, settings, c.featureGates);
    const result = renderIptables({
      state,
      settings,
      fullSync: true,
      changedServices: new Set(),
      existingNatChains: c.existingNatChains ?? [],
      ...(c.featureGates ? { featureGates: c.featureGates } : {}),
    });
    const expected = readFileSync(new URL(`${c.name}.expected.txt`, DIR), "utf8")
      .split("\n")
      .filter((l) => !l.startsWith("#"))
      .join("\n")
      .replace(/^[ \t\n]+/, "");
    assert.equal(sortIPTablesRules(result.payload), expected);
    assert.deepEqual(checkIPTablesRuleJumps(result.payload), []);
    // Upstream's iptables_last metrics equal the `-A` lines of each table on a full sync.
    const [filterPart = "", natPart = ""] = expected.split("*nat\n");
    const countRules = (text: string): number => text.split("\n").filter((l) => l.startsWith("-A ")).length;
    assert.equal(result.counts.filterRules, countRules(filterPart));
    assert.equal(result.counts.natRulesWritten, countRules(natPart));
    assert.equal(result.counts.natRulesTotal, countRules(natPart));
  });
}
