import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import fc from "fast-check";
import { formatDuration, parseDuration } from "../../../src/config/duration.ts";
import { resolveConfiguration, validateConfiguration } from "../../../src/config/load.ts";
import { defaultConfiguration } from "../../../src/config/types.ts";
import { ConfigError, InputError } from "../../../src/errors.ts";

/** One folder for every file this suite writes, removed when the suite ends (pass or fail). */
const dir = mkdtempSync(join(tmpdir(), "kpt-config-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;

function file(text: string): string {
  const path = join(dir, `config-${++files}.yaml`);
  writeFileSync(path, text);
  return path;
}

test("Go durations parse and print like metav1.Duration", () => {
  assert.equal(parseDuration("30s", "f"), 30_000);
  assert.equal(parseDuration("1m0s", "f"), 60_000);
  assert.equal(parseDuration("2h22m", "f"), 8_520_000);
  assert.equal(parseDuration("500ms", "f"), 500);
  assert.equal(parseDuration("1.5h", "f"), 5_400_000);
  assert.equal(parseDuration("0", "f"), 0);
  assert.equal(formatDuration(30_000), "30s");
  assert.equal(formatDuration(60_000), "1m0s");
  assert.equal(formatDuration(86_400_000), "24h0m0s");
  assert.equal(formatDuration(900_000), "15m0s");
  assert.equal(formatDuration(500), "500ms");
  assert.equal(formatDuration(0), "0s");
  for (const bad of ["", "30", "s", "1x", "1h 2m", "--1s"]) {
    assert.throws(
      () => parseDuration(bad, "iptables.syncPeriod"),
      (e: unknown) => e instanceof ConfigError && /iptables\.syncPeriod/.test(e.message),
    );
  }
});

test("formatDuration and parseDuration round-trip whole milliseconds", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 10 * 86_400_000 }),
      (ms) => parseDuration(formatDuration(ms), "f") === ms,
    ),
  );
});

test("defaults are upstream's and valid", () => {
  const config = defaultConfiguration();
  assert.deepEqual(validateConfiguration(config), []);
  assert.equal(config.iptables.syncPeriod, "30s");
  assert.equal(config.iptables.minSyncPeriod, "1s");
  assert.equal(config.iptables.masqueradeBit, 14);
  assert.equal(config.healthzBindAddress, "0.0.0.0:10256");
  assert.equal(config.metricsBindAddress, "127.0.0.1:10249");
  assert.equal(config.conntrack.maxPerCore, 32768);
});

test("flags set config fields; bool flags accept --flag and --flag=false", () => {
  const { config } = resolveConfiguration({
    proxyMode: "iptables",
    masqueradeAll: true,
    iptablesLocalhostNodeports: false,
    iptablesSyncPeriod: "10s",
    clusterCidr: "10.244.0.0/16,fd00:10:244::/56",
    nodeportAddresses: ["primary"],
    featureGates: { MultiCIDRServiceAllocator: false },
    healthzPort: 0,
    v: 4,
  });
  assert.equal(config.iptables.masqueradeAll, true);
  assert.equal(config.iptables.localhostNodePorts, false);
  assert.equal(config.iptables.syncPeriod, "10s");
  assert.equal(config.clusterCIDR, "10.244.0.0/16,fd00:10:244::/56");
  assert.deepEqual(config.nodePortAddresses, ["primary"]);
  assert.deepEqual(config.featureGates, { MultiCIDRServiceAllocator: false });
  assert.equal(config.healthzBindAddress, "");
  assert.equal(config.logging.verbosity, 4);
  assert.ok(Object.isFrozen(config.iptables), "the resolved config is deep-frozen");
});

test("every validation problem is reported at once", () => {
  assert.throws(
    () =>
      resolveConfiguration({
        proxyMode: "userspace",
        iptablesMasqueradeBit: 40,
        iptablesSyncPeriod: "0s",
        clusterCidr: "10.0.0.0/33",
        nodeportAddresses: ["primary", "10.0.0.0/8"],
        healthzBindAddress: "nope",
      }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      const text = err.problems.join("\n");
      for (const field of [
        "mode",
        "iptables.masqueradeBit",
        "iptables.syncPeriod",
        "clusterCIDR",
        "nodePortAddresses",
        "healthzBindAddress",
      ]) {
        assert.match(text, new RegExp(`^${field.replace(".", "\\.")}:`, "m"), field);
      }
      return true;
    },
  );
});

test("a config file wins over flags (except -v), is defaulted, and unknown fields only warn", () => {
  const path = file(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: 10.244.0.0/16
iptables:
  masqueradeBit: 15
  minSyncPeriod: 5s
someFutureField: true
`);
  const { config, warnings } = resolveConfiguration({
    config: path,
    masqueradeAll: true,
    v: 2,
    hostnameOverride: "node-a",
  });
  assert.equal(
    config.hostnameOverride,
    "node-a",
    "--hostname-override applies on top of the file, as upstream",
  );
  assert.equal(config.iptables.masqueradeBit, 15);
  assert.equal(config.iptables.minSyncPeriod, "5s");
  assert.equal(config.iptables.syncPeriod, "30s", "defaulted");
  assert.equal(
    config.iptables.masqueradeAll,
    false,
    "flags other than -v and --hostname-override are ignored with --config",
  );
  assert.equal(config.logging.verbosity, 2);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /someFutureField/);
});

test("a broken config file gets an error naming the file and the field", () => {
  const wrongType = file(
    "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables:\n  masqueradeBit: fourteen\n",
  );
  assert.throws(
    () => resolveConfiguration({ config: wrongType }),
    (e: unknown) =>
      e instanceof ConfigError && e.message.includes(wrongType) && /iptables\.masqueradeBit/.test(e.message),
  );
  const notYaml = file("mode: [iptables\n");
  assert.throws(
    () => resolveConfiguration({ config: notYaml }),
    (e: unknown) => e instanceof InputError && /invalid YAML/.test(e.message),
  );
  const noKind = file("mode: iptables\n");
  assert.throws(() => resolveConfiguration({ config: noKind }), /apiVersion/);
  assert.throws(() => resolveConfiguration({ config: "/nonexistent/kpt.yaml" }), InputError);
});
