import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProcessRunner } from "../../src/kernel/exec.ts";

/** A PEM certificate with its key, and where both were written. */
export interface KeyPair {
  readonly cert: string;
  readonly key: string;
  readonly certFile: string;
  readonly keyFile: string;
}

export interface TestPki {
  readonly dir: string;
  readonly ca: KeyPair;
  /** Valid for 127.0.0.1, ::1 and localhost. */
  readonly server: KeyPair;
  /** CN=kube-proxy, O=system:node-proxier (what a real cluster issues to kube-proxy). */
  readonly client: KeyPair;
  /** Signed by a different CA: the test server must reject it. */
  readonly rogueClient: KeyPair;
  cleanup(): Promise<void>;
}

const runner = new ProcessRunner();
const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"];

async function selfSigned(dir: string, name: string, subject: string): Promise<KeyPair> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await runner.run(
    [
      "openssl",
      "req",
      "-x509",
      ...EC,
      "-subj",
      subject,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-keyout",
      keyFile,
      "-out",
      certFile,
    ],
    { timeoutMs: 20_000 },
  );
  return { certFile, keyFile, cert: await readFile(certFile, "utf8"), key: await readFile(keyFile, "utf8") };
}

async function signed(
  dir: string,
  name: string,
  ca: KeyPair,
  subject: string,
  ext: string[],
): Promise<KeyPair> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await runner.run(
    [
      "openssl",
      "req",
      "-x509",
      ...EC,
      "-subj",
      subject,
      "-CA",
      ca.certFile,
      "-CAkey",
      ca.keyFile,
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      ...ext.flatMap((e) => ["-addext", e]),
      "-keyout",
      keyFile,
      "-out",
      certFile,
    ],
    { timeoutMs: 20_000 },
  );
  return { certFile, keyFile, cert: await readFile(certFile, "utf8"), key: await readFile(keyFile, "utf8") };
}

/** Generates a throw-away CA, a server certificate and client certificates with the openssl CLI. */
export async function makeTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), "kpt-pki-"));
  try {
    const ca = await selfSigned(dir, "ca", "/CN=kpt-test-ca");
    const rogueCa = await selfSigned(dir, "rogue-ca", "/CN=kpt-rogue-ca");
    const server = await signed(dir, "server", ca, "/CN=kpt-test-apiserver", [
      "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost",
      "extendedKeyUsage=serverAuth",
    ]);
    const client = await signed(dir, "client", ca, "/O=system:node-proxier/CN=kube-proxy", [
      "extendedKeyUsage=clientAuth",
    ]);
    const rogueClient = await signed(dir, "rogue-client", rogueCa, "/CN=intruder", [
      "extendedKeyUsage=clientAuth",
    ]);
    return { dir, ca, server, client, rogueClient, cleanup: () => rm(dir, { recursive: true, force: true }) };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
