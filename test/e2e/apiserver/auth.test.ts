import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chmod, copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ApiError, KubeClient, NODES } from "../../../src/k8s/client.ts";
import { buildRestConfig, inClusterConfig, loadKubeconfig } from "../../../src/k8s/kubeconfig.ts";
import type { RestConfig } from "../../../src/k8s/kubeconfig.ts";
import { ProcessRunner } from "../../../src/kernel/exec.ts";
import { TestApiServer } from "../../support/apiserver.ts";
import { kubeconfigYaml, startSecureServer, TEST_TOKEN } from "../../support/apiserver-fixtures.ts";
import type { SecureServer } from "../../support/apiserver-fixtures.ts";

const b64 = (text: string): string => Buffer.from(text).toString("base64");

describe("credentials from kubeconfig, --master and in-cluster config reach the apiserver", () => {
  let s: SecureServer;
  let n = 0;

  before(async () => {
    s = await startSecureServer();
  });
  after(async () => {
    await s.close();
  });

  async function writeKubeconfig(
    cluster: Record<string, unknown>,
    user: Record<string, unknown>,
    server = s.server.url,
  ) {
    const path = join(s.pki.dir, `kubeconfig-${n++}`);
    await writeFile(path, kubeconfigYaml(server, cluster, user));
    return path;
  }

  /** The user the server saw for one list call. */
  async function whoAmI(config: RestConfig): Promise<string | null> {
    const client = new KubeClient(config, { qps: 0 });
    try {
      await client.list(NODES, {});
      return s.server.requests.at(-1)?.user ?? null;
    } finally {
      client.close();
    }
  }

  test("client certificate and CA as files", async () => {
    assert.equal(await whoAmI(await loadKubeconfig(s.kubeconfig)), "kube-proxy");
  });

  test("client certificate, key and CA inline (base64 *-data)", async () => {
    const path = await writeKubeconfig(
      { "certificate-authority-data": b64(s.pki.ca.cert) },
      { "client-certificate-data": b64(s.pki.client.cert), "client-key-data": b64(s.pki.client.key) },
    );
    assert.equal(await whoAmI(await loadKubeconfig(path)), "kube-proxy");
  });

  test("relative certificate paths are relative to the kubeconfig file", async () => {
    const dir = join(s.pki.dir, "rel");
    await mkdir(dir, { recursive: true });
    await copyFile(s.pki.ca.certFile, join(dir, "ca.crt"));
    const path = join(dir, "config");
    await writeFile(
      path,
      kubeconfigYaml(s.server.url, { "certificate-authority": "ca.crt" }, { token: TEST_TOKEN }),
    );
    assert.equal(await whoAmI(await loadKubeconfig(path)), "alice");
  });

  test("bearer token; a wrong token and no credentials answer 401 Unauthorized", async () => {
    const good = await writeKubeconfig({ "certificate-authority": s.pki.ca.certFile }, { token: TEST_TOKEN });
    assert.equal(await whoAmI(await loadKubeconfig(good)), "alice");
    for (const user of [{ token: "wrong" }, {}]) {
      const path = await writeKubeconfig({ "certificate-authority": s.pki.ca.certFile }, user);
      await assert.rejects(whoAmI(await loadKubeconfig(path)), (err: unknown) => {
        return err instanceof ApiError && err.status === 401 && err.reason === "Unauthorized";
      });
    }
  });

  test("a client certificate from another CA is not accepted", async () => {
    const path = await writeKubeconfig(
      { "certificate-authority": s.pki.ca.certFile },
      { "client-certificate": s.pki.rogueClient.certFile, "client-key": s.pki.rogueClient.keyFile },
    );
    await assert.rejects(
      whoAmI(await loadKubeconfig(path)),
      (err: unknown) => err instanceof ApiError && err.status === 401,
    );
  });

  test("server certificate: rejected without the CA, accepted with insecure-skip-tls-verify", async () => {
    const strict = await writeKubeconfig({}, { token: TEST_TOKEN });
    await assert.rejects(whoAmI(await loadKubeconfig(strict)), (err: unknown) => {
      return err instanceof ApiError && err.reason === "ConnectionFailed" && /certificate/.test(err.message);
    });
    const insecure = await writeKubeconfig({ "insecure-skip-tls-verify": true }, { token: TEST_TOKEN });
    assert.equal(await whoAmI(await loadKubeconfig(insecure)), "alice");
  });

  test("token file is re-read after a 401 (rotation)", async () => {
    const tokenFile = join(s.pki.dir, "rotating-token");
    await writeFile(tokenFile, "first-token\n");
    s.server.addToken("first-token", "sa-1");
    const path = await writeKubeconfig({ "certificate-authority": s.pki.ca.certFile }, { tokenFile });
    const config = await loadKubeconfig(path);
    assert.equal(await whoAmI(config), "sa-1");
    await writeFile(tokenFile, "second-token\n");
    s.server.addToken("second-token", "sa-2");
    s.server.revokeToken("first-token");
    assert.equal(await whoAmI(config), "sa-2");
  });

  test("exec credential plugin: gets KUBERNETES_EXEC_INFO and env, its token is used", async () => {
    const script = join(s.pki.dir, "plugin.sh");
    const infoFile = join(s.pki.dir, "exec-info.json");
    await writeFile(
      script,
      [
        "#!/bin/sh",
        'printf "%s" "$KUBERNETES_EXEC_INFO" > "$INFO_FILE"',
        'printf \'{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s"}}\' "$PLUGIN_TOKEN"',
        "",
      ].join("\n"),
    );
    await chmod(script, 0o755);
    s.server.addToken("from-plugin", "plugin-user");
    const path = await writeKubeconfig(
      { "certificate-authority": s.pki.ca.certFile },
      {
        exec: {
          apiVersion: "client.authentication.k8s.io/v1",
          command: "./plugin.sh",
          env: [
            { name: "PLUGIN_TOKEN", value: "from-plugin" },
            { name: "INFO_FILE", value: infoFile },
          ],
          provideClusterInfo: true,
          interactiveMode: "Never",
        },
      },
    );
    const config = await loadKubeconfig(path, { runner: new ProcessRunner() });
    assert.equal(await whoAmI(config), "plugin-user");
    const info = JSON.parse(await readFile(infoFile, "utf8")) as {
      kind: string;
      spec: { cluster: { server: string } };
    };
    assert.equal(info.kind, "ExecCredential");
    assert.equal(info.spec.cluster.server, s.server.url);
  });

  test("--master overrides the kubeconfig's server", async () => {
    const path = await writeKubeconfig(
      { "certificate-authority": s.pki.ca.certFile },
      { token: TEST_TOKEN },
      "https://127.0.0.1:1",
    );
    const config = await buildRestConfig({ kubeconfig: path, master: s.server.url });
    assert.equal(config.server, s.server.url);
    assert.equal(await whoAmI(config), "alice");
  });

  test("in-cluster: KUBERNETES_SERVICE_HOST/PORT and the service-account mount", async () => {
    const sa = join(s.pki.dir, "serviceaccount");
    await mkdir(sa, { recursive: true });
    await writeFile(join(sa, "token"), `${TEST_TOKEN}\n`);
    await copyFile(s.pki.ca.certFile, join(sa, "ca.crt"));
    const port = new URL(s.server.url).port;
    const config = await inClusterConfig({
      env: { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: port },
      serviceAccountDir: sa,
    });
    assert.equal(await whoAmI(config), "alice");
    await assert.rejects(inClusterConfig({ env: {}, serviceAccountDir: sa }), /KUBERNETES_SERVICE_HOST/);
  });

  test("--master alone talks to a plain-HTTP apiserver without credentials", async () => {
    const plain = await TestApiServer.start({ allowAnonymous: true });
    try {
      const config = await buildRestConfig({ master: plain.url });
      const client = new KubeClient(config, { qps: 0 });
      await client.list(NODES, {});
      client.close();
      assert.equal(plain.requests.at(-1)?.user, "system:anonymous");
    } finally {
      await plain.stop();
    }
  });
});
