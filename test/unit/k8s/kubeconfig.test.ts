import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InputError } from "../../../src/errors.ts";
import { buildRestConfig, loadKubeconfig, tokenFileSource } from "../../../src/k8s/kubeconfig.ts";
import type { ExecOptions, ExecResult, Runner } from "../../../src/kernel/exec.ts";

const PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const b64 = (t: string): string => Buffer.from(t).toString("base64");

function config(over: { cluster?: object; user?: object; context?: object; root?: object } = {}): string {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "c1", cluster: { server: "https://10.0.0.1:6443", ...over.cluster } }],
    users: [{ name: "u1", user: { token: "abc", ...over.user } }],
    contexts: [{ name: "ctx", context: { cluster: "c1", user: "u1", ...over.context } }],
    "current-context": "ctx",
    ...over.root,
  });
}

class FakeRunner implements Runner {
  readonly calls: (readonly string[])[] = [];
  readonly options: (ExecOptions | undefined)[] = [];
  constructor(private readonly stdout: () => string) {}
  async run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    this.calls.push(argv);
    this.options.push(options);
    return { argv, exitCode: 0, stdout: this.stdout(), stderr: "", durationMs: 1 };
  }
}

describe("kubeconfig", () => {
  let dir: string;
  let n = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "kpt-kubeconfig-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function file(text: string): Promise<string> {
    const path = join(dir, `config-${n++}`);
    await writeFile(path, text);
    return path;
  }

  /** Loads and expects an InputError whose message names the file and matches `field`. */
  async function rejects(text: string, field: RegExp, options = {}): Promise<void> {
    const path = await file(text);
    await assert.rejects(loadKubeconfig(path, options), (err: unknown) => {
      assert.ok(err instanceof InputError, `InputError expected, got ${String(err)}`);
      assert.equal(err.code, "KPT_INPUT");
      assert.ok(err.message.startsWith(`${path}: `), err.message);
      assert.match(err.message, field);
      return true;
    });
  }

  test("token user: server, static token, no TLS material", async () => {
    const cfg = await loadKubeconfig(await file(config()));
    assert.equal(cfg.server, "https://10.0.0.1:6443");
    assert.deepEqual(await cfg.credentials.get(), { token: "abc" });
    assert.equal(cfg.tls.ca, undefined);
    assert.equal(cfg.tls.insecureSkipTlsVerify, false);
  });

  test("inline data wins over file paths; tls-server-name and context override", async () => {
    const text = config({
      cluster: {
        "certificate-authority-data": b64(PEM),
        "certificate-authority": "/nonexistent",
        "tls-server-name": "api",
      },
      root: {
        contexts: [
          { name: "ctx", context: { cluster: "c1", user: "u1" } },
          { name: "other", context: { cluster: "c1", user: "u2" } },
        ],
        users: [
          { name: "u1", user: { token: "abc" } },
          { name: "u2", user: { "client-certificate-data": b64(PEM), "client-key-data": b64(PEM) } },
        ],
      },
    });
    const cfg = await loadKubeconfig(await file(text), { context: "other" });
    assert.equal(cfg.tls.ca?.toString(), PEM);
    assert.equal(cfg.tls.cert?.toString(), PEM);
    assert.equal(cfg.tls.serverName, "api");
    assert.deepEqual(await cfg.credentials.get(), {});
  });

  test("errors name the file and the field", async () => {
    await rejects("a: [", /not valid YAML/);
    await rejects("- 1\n", /must be a YAML mapping/);
    await rejects(config({ root: { "current-context": "" } }), /current-context: is not set/);
    await rejects(config({ root: { "current-context": "missing" } }), /contexts: no entry named "missing"/);
    await rejects(config({ context: { cluster: "nope" } }), /clusters: no entry named "nope"/);
    await rejects(config({ cluster: { server: "" } }), /clusters\["c1"\]\.cluster\.server: is not set/);
    await rejects(
      config({ cluster: { server: "ftp://x" } }),
      /clusters\["c1"\]\.cluster\.server: "ftp:\/\/x" is not/,
    );
    await rejects(
      config({ cluster: { "certificate-authority": "missing-ca.crt" } }),
      /clusters\["c1"\]\.cluster\.certificate-authority: cannot read .*missing-ca\.crt/,
    );
    await rejects(
      config({ user: { "client-certificate-data": "%%%", "client-key-data": b64(PEM) } }),
      /users\["u1"\]\.user\.client-certificate-data: is not valid base64/,
    );
    await rejects(
      config({ user: { "client-certificate-data": b64("hello"), "client-key-data": b64(PEM) } }),
      /client-certificate-data: does not decode to PEM/,
    );
    await rejects(
      config({ user: { "client-certificate-data": b64(PEM) } }),
      /users\["u1"\]\.user: client-certificate and client-key must be given together/,
    );
    await rejects(
      config({ cluster: { "insecure-skip-tls-verify": "yes" } }),
      /insecure-skip-tls-verify: must be true or false/,
    );
    await rejects(
      config({ user: { token: undefined, exec: { command: "x" } } }),
      /exec\.apiVersion: must be one of/,
    );
    await rejects(
      config({ user: { token: undefined, exec: { apiVersion: "client.authentication.k8s.io/v1" } } }),
      /exec\.command: is not set/,
    );
    await rejects(
      config({ user: { token: undefined, username: "admin" } }),
      /user\.username: is not supported/,
    );
    await assert.rejects(loadKubeconfig(join(dir, "absent")), /absent: cannot read kubeconfig/);
  });

  test("--master with kubeconfig overrides the server; a bad --master is named", async () => {
    const path = await file(config());
    const cfg = await buildRestConfig({ kubeconfig: path, master: "https://192.0.2.1:443" });
    assert.equal(cfg.server, "https://192.0.2.1:443");
    await assert.rejects(
      buildRestConfig({ kubeconfig: path, master: "not a url" }),
      /--master: "not a url" is not/,
    );
    await assert.rejects(buildRestConfig({ master: "::" }), /--master/);
  });

  test("a server without a scheme is client-go's host:port: https:// with TLS material, else http://", async () => {
    assert.equal((await buildRestConfig({ master: "localhost:8080" })).server, "http://localhost:8080");
    assert.equal((await buildRestConfig({ master: "[fd00::1]:8080" })).server, "http://[fd00::1]:8080");
    const withCA = await file(
      config({ cluster: { server: "10.0.0.1:6443", "certificate-authority-data": b64(PEM) } }),
    );
    assert.equal((await loadKubeconfig(withCA)).server, "https://10.0.0.1:6443");
    const plain = await file(config({ cluster: { server: "10.0.0.1:8080" } }));
    assert.equal((await loadKubeconfig(plain)).server, "http://10.0.0.1:8080");
    assert.equal((await loadKubeconfig(plain, { master: "https://192.0.2.1" })).server, "https://192.0.2.1");
    for (const bad of ["http://[::1", "ftp://x:1", "http://", "a b:1"]) {
      await assert.rejects(buildRestConfig({ master: bad }), (err: unknown) => {
        assert.ok(err instanceof InputError, String(err));
        assert.match(err.message, /^--master: .* is not an http\(s\) URL or a host:port pair$/);
        return true;
      });
    }
    await rejects(
      config({ cluster: { server: "ftp://x" } }),
      /clusters\["c1"\]\.cluster\.server: "ftp:\/\/x" is not an http\(s\) URL/,
    );
  });

  test("exec plugin output is cached until expirationTimestamp and refreshed on invalidate", async () => {
    let now = Date.parse("2026-01-01T00:00:00Z");
    let issued = 0;
    const runner = new FakeRunner(() =>
      JSON.stringify({
        apiVersion: "client.authentication.k8s.io/v1",
        kind: "ExecCredential",
        status: { token: `t${++issued}`, expirationTimestamp: "2026-01-01T00:10:00Z" },
      }),
    );
    const path = await file(
      config({
        user: {
          token: undefined,
          exec: {
            apiVersion: "client.authentication.k8s.io/v1",
            command: "get-token",
            args: ["--x"],
            env: [{ name: "A", value: "1" }],
          },
        },
      }),
    );
    const cfg = await loadKubeconfig(path, { runner, clock: { now: () => now } });
    assert.deepEqual(await cfg.credentials.get(), { token: "t1" });
    assert.deepEqual(await cfg.credentials.get(), { token: "t1" });
    // The exec info (cluster CA included) goes in the environment, where only the plugin sees it.
    assert.deepEqual(runner.calls[0], ["get-token", "--x"]);
    const env = runner.options[0]?.env ?? {};
    assert.match(env["KUBERNETES_EXEC_INFO"] ?? "", /^\{.*"kind":"ExecCredential"/);
    assert.equal(env["A"], "1");
    assert.ok(runner.options[0]?.timeoutMs !== undefined);
    now += 11 * 60_000;
    assert.deepEqual(await cfg.credentials.get(), { token: "t2" });
    cfg.credentials.invalidate();
    assert.deepEqual(await cfg.credentials.get(), { token: "t3" });
  });

  test("exec plugin garbage is an error naming the plugin", async () => {
    const path = await file(
      config({
        user: {
          token: undefined,
          exec: { apiVersion: "client.authentication.k8s.io/v1beta1", command: "p" },
        },
      }),
    );
    const cfg = await loadKubeconfig(path, { runner: new FakeRunner(() => "hello") });
    await assert.rejects(cfg.credentials.get(), /credential plugin p did not print JSON/);
    const cfg2 = await loadKubeconfig(path, {
      runner: new FakeRunner(() => '{"kind":"ExecCredential","status":{}}'),
    });
    await assert.rejects(cfg2.credentials.get(), /neither token nor client certificate/);
  });

  test("token file is re-read once a minute", async () => {
    const tokenPath = join(dir, "token");
    await writeFile(tokenPath, "one\n");
    let now = 0;
    const source = tokenFileSource(tokenPath, { now: () => now });
    assert.deepEqual(await source.get(), { token: "one" });
    await writeFile(tokenPath, "two\n");
    now = 59_000;
    assert.deepEqual(await source.get(), { token: "one" });
    now = 60_000;
    assert.deepEqual(await source.get(), { token: "two" });
    await assert.rejects(tokenFileSource(join(dir, "none")).get(), /none: cannot read token file/);
  });
});
