import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { main } from "../../../src/cli/program.ts";
import { TestApiServer } from "../../support/apiserver.ts";
import { endpointSlice, service } from "../../support/daemon.ts";

/** Runs the CLI in-process; returns its exit code, stdout and stderr. */
async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  let stdout = "";
  let stderr = "";
  process.stdout.write = ((chunk: string | Uint8Array) => {
    stdout += chunk.toString();
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += chunk.toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await main(argv), stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}

describe("explain --api: exec-plugin kubeconfigs and --master host:port", () => {
  const dir = mkdtempSync(join(tmpdir(), "kpt-explain-api-"));
  let server: TestApiServer;
  let anonymous: TestApiServer;

  before(async () => {
    server = await TestApiServer.start({ tokens: { "tok-from-plugin": "system:kube-proxy" } });
    anonymous = await TestApiServer.start({ allowAnonymous: true });
    for (const s of [server, anonymous]) {
      s.put(service({ name: "web", clusterIP: "10.1.0.10", ports: [{ port: 80 }] }));
      s.put(
        endpointSlice({
          service: "web",
          endpoints: [{ ip: "10.244.0.5", node: "n1" }],
          ports: [{ port: 80 }],
        }),
      );
    }
  });

  after(async () => {
    await server.stop();
    await anonymous.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("runs the kubeconfig's exec plugin with KUBERNETES_EXEC_INFO and its env entries in the environment, not argv", async () => {
    const plugin = join(dir, "plugin.sh");
    writeFileSync(
      plugin,
      [
        "#!/bin/sh",
        'case "$*" in *KUBERNETES_EXEC_INFO*|*ExecCredential*) echo "secret in argv" >&2; exit 4;; esac',
        'case "$KUBERNETES_EXEC_INFO" in *\'"kind":"ExecCredential"\'*) ;; *) echo "no exec info" >&2; exit 3;; esac',
        '[ "$1" = "--flag" ] || exit 5',
        'printf \'{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s"}}\' "$PLUGIN_TOKEN"',
        "",
      ].join("\n"),
    );
    chmodSync(plugin, 0o755);
    const kubeconfig = join(dir, "kubeconfig");
    writeFileSync(
      kubeconfig,
      JSON.stringify({
        apiVersion: "v1",
        kind: "Config",
        clusters: [{ name: "c", cluster: { server: server.url } }],
        users: [
          {
            name: "u",
            user: {
              exec: {
                apiVersion: "client.authentication.k8s.io/v1",
                command: "./plugin.sh",
                args: ["--flag"],
                env: [{ name: "PLUGIN_TOKEN", value: "tok-from-plugin" }],
              },
            },
          },
        ],
        contexts: [{ name: "ctx", context: { cluster: "c", user: "u" } }],
        "current-context": "ctx",
      }),
    );
    const r = await cli("explain", "default/web", "--api", "--kubeconfig", kubeconfig, "-o", "json");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /10\.244\.0\.5/);
  });

  it("accepts --master host:port (http:// without TLS material, as client-go) and names a bad one", async () => {
    const hostPort = anonymous.url.replace(/^http:\/\//, "");
    const r = await cli("explain", "default/web", "--api", "--master", hostPort, "-o", "json");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /10\.244\.0\.5/);
    const bad = await cli("explain", "default/web", "--api", "--master", "http://[::1");
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /--master: "http:\/\/\[::1" is not an http\(s\) URL or a host:port pair/);
  });
});
