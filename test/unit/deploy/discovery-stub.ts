/**
 * An HTTP server that answers only API discovery (the kinds deploy/ uses) and 404 for every
 * object, so that `kubectl apply --dry-run=client` can map kinds to resources without a
 * cluster. It records every request that is not a GET: a client dry-run must send none.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

interface StubResource {
  readonly name: string;
  readonly singularName: string;
  readonly kind: string;
  readonly namespaced: boolean;
}

const VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"];

const GROUPS: Readonly<Record<string, readonly StubResource[]>> = {
  v1: [
    { name: "configmaps", singularName: "configmap", kind: "ConfigMap", namespaced: true },
    { name: "namespaces", singularName: "namespace", kind: "Namespace", namespaced: false },
    { name: "serviceaccounts", singularName: "serviceaccount", kind: "ServiceAccount", namespaced: true },
  ],
  "apps/v1": [{ name: "daemonsets", singularName: "daemonset", kind: "DaemonSet", namespaced: true }],
  "rbac.authorization.k8s.io/v1": [
    { name: "clusterroles", singularName: "clusterrole", kind: "ClusterRole", namespaced: false },
    {
      name: "clusterrolebindings",
      singularName: "clusterrolebinding",
      kind: "ClusterRoleBinding",
      namespaced: false,
    },
  ],
};

function resourceList(groupVersion: string, resources: readonly StubResource[]): unknown {
  return {
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion,
    resources: resources.map((r) => ({ ...r, verbs: VERBS })),
  };
}

function groupOf(name: string): unknown {
  const groupVersion = `${name}/v1`;
  return {
    name,
    versions: [{ groupVersion, version: "v1" }],
    preferredVersion: { groupVersion, version: "v1" },
  };
}

function discovery(path: string): unknown {
  if (path === "/api") return { kind: "APIVersions", versions: ["v1"], serverAddressByClientCIDRs: [] };
  if (path === "/api/v1") return resourceList("v1", GROUPS["v1"] ?? []);
  if (path === "/apis") {
    return {
      kind: "APIGroupList",
      apiVersion: "v1",
      groups: ["apps", "rbac.authorization.k8s.io"].map(groupOf),
    };
  }
  const match = /^\/apis\/([^/]+)\/v1$/.exec(path);
  const group = match?.[1];
  if (group !== undefined) {
    const resources = GROUPS[`${group}/v1`];
    if (resources !== undefined) return resourceList(`${group}/v1`, resources);
  }
  return undefined;
}

export interface DiscoveryStub {
  readonly url: string;
  /** "METHOD path" of every request that was not a GET. */
  readonly writes: readonly string[];
  close(): Promise<void>;
}

export async function startDiscoveryStub(): Promise<DiscoveryStub> {
  const writes: string[] = [];
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://stub").pathname;
    if (req.method !== "GET") writes.push(`${req.method ?? "?"} ${path}`);
    const body = req.method === "GET" ? discovery(path) : undefined;
    res.setHeader("Content-Type", "application/json");
    if (body !== undefined) {
      res.end(JSON.stringify(body));
      return;
    }
    res.statusCode = 404;
    res.end(
      JSON.stringify({
        kind: "Status",
        apiVersion: "v1",
        status: "Failure",
        reason: "NotFound",
        code: 404,
        message: `${path} not found`,
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    writes,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
