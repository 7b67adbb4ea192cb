import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { TestApiServer } from "./apiserver.ts";
import type { TestApiServerOptions } from "./apiserver.ts";
import { makeTestPki } from "./pki.ts";
import type { TestPki } from "./pki.ts";

export const TEST_TOKEN = "kpt-test-token-0123456789";

export interface SecureServer {
  readonly server: TestApiServer;
  readonly pki: TestPki;
  /** A kubeconfig (in the PKI dir) using the client certificate by file paths. */
  readonly kubeconfig: string;
  close(): Promise<void>;
}

/** An HTTPS test apiserver that accepts TEST_TOKEN and client certificates from its test CA. */
export async function startSecureServer(
  options: Omit<TestApiServerOptions, "tls"> = {},
): Promise<SecureServer> {
  const pki = await makeTestPki();
  try {
    const server = await TestApiServer.start({
      ...options,
      tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca.cert },
      tokens: { [TEST_TOKEN]: "alice", ...options.tokens },
    });
    const kubeconfig = join(pki.dir, "kubeconfig");
    await writeFile(
      kubeconfig,
      kubeconfigYaml(
        server.url,
        {
          "certificate-authority": pki.ca.certFile,
        },
        { "client-certificate": pki.client.certFile, "client-key": pki.client.keyFile },
      ),
    );
    return {
      server,
      pki,
      kubeconfig,
      close: async () => {
        await server.stop();
        await pki.cleanup();
      },
    };
  } catch (err) {
    await pki.cleanup();
    throw err;
  }
}

/** A one-context kubeconfig (YAML is a JSON superset, so JSON it is). */
export function kubeconfigYaml(
  server: string,
  cluster: Record<string, unknown>,
  user: Record<string, unknown>,
  namespace = "default",
): string {
  return JSON.stringify(
    {
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "test", cluster: { server, ...cluster } }],
      users: [{ name: "test-user", user }],
      contexts: [{ name: "test", context: { cluster: "test", user: "test-user", namespace } }],
      "current-context": "test",
    },
    null,
    2,
  );
}

export function service(
  name: string,
  opts: { namespace?: string; labels?: Record<string, string>; clusterIP?: string } = {},
): unknown {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      name,
      namespace: opts.namespace ?? "default",
      ...(opts.labels ? { labels: opts.labels } : {}),
    },
    spec: {
      ...(opts.clusterIP !== undefined ? { clusterIP: opts.clusterIP } : {}),
      selector: { app: name },
      ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }],
    },
  };
}

export function endpointSlice(
  name: string,
  serviceName: string,
  ips: string[],
  namespace = "default",
): unknown {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name, namespace, labels: { "kubernetes.io/service-name": serviceName } },
    addressType: "IPv4",
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
  };
}

export function node(name: string, labels: Record<string, string> = {}): unknown {
  return { apiVersion: "v1", kind: "Node", metadata: { name, labels }, spec: { podCIDR: "10.244.0.0/24" } };
}

/** Polls `check` every 20 ms until it returns true or `ms` pass (then throws naming `what`). */
export async function waitFor(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
