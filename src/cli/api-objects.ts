/**
 * The objects a sync would be rendered from, read from the API server (`--api`, with
 * --kubeconfig/--master as the daemon connects) and written as one List file for the
 * manifests reader, so `explain --api` and `diff --api` render exactly as `render -f` does.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveConfiguration } from "../config/load.ts";
import { nodeName } from "../config/node.ts";
import { InputError } from "../errors.ts";
import { ApiError, ENDPOINT_SLICES, KubeClient, NODES, SERVICE_CIDRS, SERVICES } from "../k8s/client.ts";
import type { ResourceRef } from "../k8s/client.ts";
import { PROXY_LABEL_SELECTOR, SERVICE_FIELD_SELECTOR } from "../k8s/informer.ts";
import { buildRestConfig } from "../k8s/kubeconfig.ts";
import type { Runner } from "../kernel/exec.ts";

/** List items come without kind/apiVersion; the manifest reader needs them. */
function typed(items: readonly unknown[], kind: string, apiVersion: string): unknown[] {
  return items.map((item) => ({ ...(item as object), kind, apiVersion }));
}

/**
 * Lists from the API server what the daemon's source watches (the same selectors), or only
 * one Service and its EndpointSlices, and hands `render` the path of a file holding them.
 */
export async function withApiObjects<T>(
  options: Record<string, unknown>,
  runner: Runner,
  service: { readonly namespace: string; readonly name: string } | undefined,
  render: (paths: string[]) => Promise<T>,
): Promise<T> {
  const { config } = resolveConfiguration(options);
  const master = options["master"];
  const rest = await buildRestConfig(
    {
      kubeconfig: config.clientConnection.kubeconfig,
      ...(typeof master === "string" ? { master } : {}),
    },
    { runner },
  );
  const client = new KubeClient(rest, { qps: 0 });
  const list = async (resource: ResourceRef, selector: Record<string, string>) =>
    (await client.listAll(resource, selector)).items;
  let services: unknown[];
  let slices: unknown[];
  if (service === undefined) {
    services = await list(SERVICES, {
      labelSelector: PROXY_LABEL_SELECTOR,
      fieldSelector: SERVICE_FIELD_SELECTOR,
    });
    slices = await list(ENDPOINT_SLICES, { labelSelector: PROXY_LABEL_SELECTOR });
  } else {
    services = await list(SERVICES, {
      namespace: service.namespace,
      fieldSelector: `metadata.name=${service.name}`,
    });
    if (services.length === 0)
      throw new InputError(
        "explain",
        `Service ${service.namespace}/${service.name} not found on the API server`,
      );
    slices = await list(ENDPOINT_SLICES, {
      namespace: service.namespace,
      labelSelector: `kubernetes.io/service-name=${service.name}`,
    });
  }
  const nodes = await list(NODES, { fieldSelector: `metadata.name=${nodeName(config)}` });
  // An API server without ServiceCIDRs (before 1.33): --service-cluster-ip-range, as the daemon.
  const cidrs =
    service === undefined
      ? await list(SERVICE_CIDRS, {}).catch((err: unknown) => {
          if (err instanceof ApiError && err.status === 404) return [];
          throw err;
        })
      : [];
  const dir = mkdtempSync(join(tmpdir(), "kpt-api-objects-"));
  try {
    const file = join(dir, "objects.json");
    const items = [
      ...typed(services, "Service", "v1"),
      ...typed(slices, "EndpointSlice", "discovery.k8s.io/v1"),
      ...typed(nodes, "Node", "v1"),
      ...typed(cidrs, "ServiceCIDR", "networking.k8s.io/v1"),
    ];
    writeFileSync(file, JSON.stringify({ apiVersion: "v1", kind: "List", items }));
    return await render([file]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
