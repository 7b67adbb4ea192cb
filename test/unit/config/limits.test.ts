import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { cliStderr } from "../../support/cli.ts";
import { resolveConfiguration } from "../../../src/config/load.ts";
import { ConfigError, InputError, InvalidObjectError } from "../../../src/errors.ts";
import { decodeService, MAX_OBJECT_BYTES } from "../../../src/k8s/objects.ts";
import { MAX_MANIFEST_FILE_BYTES, readManifestPaths } from "../../../src/source/manifests.ts";

const dir = mkdtempSync(join(tmpdir(), "kpt-limits-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function problems(options: Record<string, unknown>): string[] {
  try {
    resolveConfiguration(options);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return [...err.problems];
  }
  return [];
}

function service(spec: Record<string, unknown>): Record<string, unknown> {
  return {
    kind: "Service",
    metadata: { name: "big", namespace: "default" },
    spec: { clusterIP: "10.96.0.10", ports: [{ name: "http", port: 80 }], ...spec },
  };
}

describe("feature gates", () => {
  it("refuses an unknown gate as upstream does, and a locked GA gate set against its lock", () => {
    assert.deepEqual(problems({ featureGates: { Foo: true } }), [
      "featureGates: unrecognized feature gate: Foo",
    ]);
    assert.deepEqual(problems({ featureGates: { LoadBalancerIPMode: false } }), [
      "featureGates: cannot set feature gate LoadBalancerIPMode to false, feature is locked to true",
    ]);
    assert.deepEqual(
      problems({
        featureGates: { LoadBalancerIPMode: true, MultiCIDRServiceAllocator: false, AllAlpha: true },
      }),
      [],
    );
    assert.deepEqual(problems({ featureGates: { toString: true } }), [
      "featureGates: unrecognized feature gate: toString",
    ]);
  });

  it("--feature-gates Foo=true stops the daemon before it starts", async () => {
    const r = await cliStderr("run", "--feature-gates", "Foo=true", "--write-config-to", join(dir, "c.yaml"));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unrecognized feature gate: Foo/);
  });
});

describe("integer ranges in messages", () => {
  it("ports say 1-65535, not <=9007199254740991", () => {
    for (const bad of [70000, 1e300, 0, 1.5]) {
      assert.throws(
        () => decodeService(service({ ports: [{ name: "http", port: bad }] }), "f"),
        (err: unknown) =>
          err instanceof InvalidObjectError &&
          err.field === "spec.ports[0].port" &&
          err.reason === "must be an integer from 1 to 65535",
      );
    }
  });

  it("int32 config fields and flags say the int32 range", async () => {
    const file = join(dir, "cfg.yaml");
    writeFileSync(
      file,
      "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\noomScoreAdj: 1e300\n",
    );
    assert.throws(
      () => resolveConfiguration({ config: file }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /oomScoreAdj: must be an int32 \(-2147483648 to 2147483647\)/.test(err.message) &&
        !/9007199254740991/.test(err.message),
    );
    const r = await cliStderr(
      "run",
      "--kube-api-burst",
      "99999999999",
      "--write-config-to",
      join(dir, "x.yaml"),
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--kube-api-burst takes an int32 \(-2147483648 to 2147483647\)/);
  });
});

describe("size limits", () => {
  it("refuses an object over 1.5 MiB encoded, naming it, before validating it", () => {
    const ips = Array.from(
      { length: 500_000 },
      (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    );
    const started = performance.now();
    assert.throws(
      () => decodeService(service({ externalIPs: ips }), "f"),
      (err: unknown) =>
        err instanceof InvalidObjectError &&
        err.object === "Service default/big" &&
        err.field === "(object)" &&
        err.reason.includes(`over the ${MAX_OBJECT_BYTES}-byte (1.5 MiB) limit`),
    );
    assert.ok(performance.now() - started < 2_000);
    assert.doesNotThrow(() => decodeService(service({ externalIPs: ips.slice(0, 1000) }), "f"));
  });

  it("refuses a manifests file over the limit before parsing it, naming the file", async () => {
    const file = join(dir, "huge.yaml");
    writeFileSync(file, `# ${"x".repeat(MAX_MANIFEST_FILE_BYTES)}\n`);
    await assert.rejects(
      readManifestPaths([file]),
      (err: unknown) =>
        err instanceof InputError &&
        err.message.startsWith(`${file}: `) &&
        /over the \d+-byte limit/.test(err.message),
    );
  });
});
