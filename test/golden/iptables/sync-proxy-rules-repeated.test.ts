/**
 * Replays upstream TestSyncProxyRulesRepeated on one evolving simulated kernel: Kubernetes YAML
 * → model → renderer → iptables-restore --noflush simulation, comparing every step with
 * upstream's expected restore input (normalised as upstream does).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { parse } from "yaml";
import { renderIptables } from "../../../src/backends/iptables/render.ts";
import type { IptablesSettings } from "../../../src/backends/iptables/types.ts";
import type { ProxyState } from "../../../src/proxy/types.ts";
import { checkIPTablesRuleJumps, sortIPTablesRules } from "../../support/iptables-normalise.ts";
import { SimulatedIptables } from "../../support/iptables-restore-sim.ts";
import { changedServiceNames, loadProxyState } from "../../support/iptables-golden.ts";

const DIR = new URL("./SyncProxyRulesRepeated/", import.meta.url);

interface Step {
  readonly name: string;
  readonly fullSync: boolean;
  readonly injectNatRules?: readonly string[];
  readonly expectRestoreFailure?: boolean;
  readonly natRulesWritten?: number;
  readonly natRulesTotal?: number;
}

const sequence = parse(readFileSync(new URL("sequence.yaml", DIR), "utf8")) as {
  settings: IptablesSettings;
  steps: Step[];
};

test("SyncProxyRulesRepeated: every step matches upstream on one evolving kernel", () => {
  const kernel = new SimulatedIptables();
  let previous: ProxyState | null = null;
  let needFullSync = true;
  let checkedOutputs = 0;
  for (const step of sequence.steps) {
    const yamlText = readFileSync(new URL(`${step.name}.yaml`, DIR), "utf8");
    const state = loadProxyState(yamlText, `${step.name}.yaml`, sequence.settings);
    for (const rule of step.injectNatRules ?? []) kernel.appendRule("nat", rule);
    const fullSync: boolean = needFullSync;
    assert.equal(fullSync, step.fullSync, `${step.name}: full sync expected ${step.fullSync}`);
    const result = renderIptables({
      state,
      settings: sequence.settings,
      fullSync,
      changedServices: previous === null ? new Set() : changedServiceNames(previous, state),
      existingNatChains: kernel.chains("nat"),
    });
    previous = state;

    let failure: unknown = null;
    try {
      kernel.restore(result.payload);
    } catch (err) {
      failure = err;
    }
    assert.equal(
      failure !== null,
      step.expectRestoreFailure === true,
      `${step.name}: restore ${String(failure)}`,
    );
    needFullSync = failure !== null;

    const expectedFile = new URL(`${step.name}.expected.txt`, DIR);
    if (existsSync(expectedFile)) {
      const expected = readFileSync(expectedFile, "utf8").replace(/^[ \t\n]+/, "");
      assert.equal(sortIPTablesRules(result.payload), expected, `${step.name}: restore input`);
      checkedOutputs++;
    }
    if (fullSync) assert.deepEqual(checkIPTablesRuleJumps(result.payload), [], `${step.name}: jumps`);
    if (step.natRulesWritten !== undefined) {
      assert.equal(result.counts.natRulesWritten, step.natRulesWritten, `${step.name}: iptables_last{nat}`);
    }
    if (step.natRulesTotal !== undefined) {
      assert.equal(result.counts.natRulesTotal, step.natRulesTotal, `${step.name}: iptables_total{nat}`);
    }
  }
  assert.equal(checkedOutputs, 9);
  assert.deepEqual(
    kernel.rules("nat", "KUBE-SVC-X27LE4BHSL4DOUIK").filter((r) => !r.includes("--comment")),
    [],
  );
  assert.ok(!kernel.chains("nat").includes("KUBE-SEP-AYCN5HPXMIRJNJXU"));
});
