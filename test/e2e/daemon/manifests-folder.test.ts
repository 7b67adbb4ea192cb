import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { stringify } from "yaml";
import { nodeManifest, WEB, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { daemonArgv, endpointSlice, service, sleep } from "../../support/daemon.ts";

/*
 * The standalone manifests folder on a real kernel: a file caught half-written or edited into an
 * invalid object keeps its Service's rules (and says so once), a real deletion removes them, and
 * a folder that cannot be read stops the daemon, non-zero, rules untouched.
 */

const NODE = WEB.node;
const CLUSTER_IP_COMMENT = "default/web:http cluster IP";

function webService(port: number): Record<string, unknown> {
  return service({ name: "web", clusterIP: "10.1.0.10", ports: [{ name: "http", port }] });
}

describe("manifests folder on a real kernel", { timeout: 180_000 }, () => {
  const env = withDaemonSandbox({ prefix: "kptmfs", topology: "bare", clusterCIDR: "" });

  it("keeps a Service's rules through a cut-short file and a schema-invalid edit, drops them on removal", async () => {
    const d = await env.start({
      manifests: {
        ...nodeManifest(),
        "slice.yaml": endpointSlice({
          service: "web",
          endpoints: [{ ip: "10.244.0.5", node: NODE }],
          ports: [{ name: "http", port: 80 }],
        }),
        "web.yaml": webService(80),
      },
    });
    await d.waitForRules("the Service's rules", (s) => s.includes(CLUSTER_IP_COMMENT));
    const file = join(d.dir, "web.yaml");
    const full = stringify(webService(80));
    // In place, not renamed: what a non-atomic writer leaves for a moment.
    writeFileSync(file, full.slice(0, full.indexOf("spec:") + "spec:\n".length));
    await sleep(1_500);
    writeFileSync(file, stringify(webService(70000)));
    await sleep(1_500);
    const save = await d.save();
    assert.ok(save.includes(CLUSTER_IP_COMMENT), `rules were removed:\n${save}${d.logTail()}`);
    const lines = d.log.split("\n").filter((l) => l.includes("web.yaml"));
    assert.equal(lines.length, 2, lines.join("\n"));
    assert.match(lines[0]!, /"object":"Service default\/web","field":"spec"/);
    assert.match(lines[1]!, /"object":"Service default\/web","field":"spec\.ports\[0\]\.port"/);

    await d.apply(() => writeFileSync(file, stringify(webService(8080))));
    assert.match(await d.save(), /-d 10\.1\.0\.10\/32 .*--dport 8080/);
    await d.apply(() => d.remove("web.yaml"));
    assert.ok(!(await d.save()).includes(CLUSTER_IP_COMMENT));
    assert.ok(d.running, d.logTail());
  });

  it("stops non-zero, touching no rule, when the folder is missing", async () => {
    const { sandbox } = env;
    const before = (await sandbox.exec(NODE, ["iptables-save"])).stdout;
    const result = await sandbox.exec(
      NODE,
      [...daemonArgv(), "--manifests", "/nonexistent/kpt-manifests", "--hostname-override", NODE],
      { okExitCodes: [0, 1, 70], timeoutMs: 60_000 },
    );
    assert.equal(result.exitCode, 1, result.stderr);
    assert.match(result.stderr + result.stdout, /cannot read the manifests folder/);
    assert.doesNotMatch(result.stdout, /kube-proxy-ts started/);
    const strip = (s: string) => s.split("\n").filter((l) => !l.startsWith("#") && !/^:/.test(l));
    assert.deepEqual(strip((await sandbox.exec(NODE, ["iptables-save"])).stdout), strip(before));
  });
});
