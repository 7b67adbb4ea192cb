/**
 * The test apiserver is only worth something if real clients accept it: Debian's kubectl drives
 * it here (apply, get, get -w, patch, delete) while our own informer watches the same objects.
 */
import { after, before, describe, test } from "node:test";
import { pino } from "pino";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KubeClient, SERVICES } from "../../../src/k8s/client.ts";
import { Informer } from "../../../src/k8s/informer.ts";
import { loadKubeconfig } from "../../../src/k8s/kubeconfig.ts";
import { ProcessRunner } from "../../../src/kernel/exec.ts";
import { ApiServerSource } from "../../../src/source/apiserver.ts";
import type { ExecResult } from "../../../src/kernel/exec.ts";
import { kubeconfigYaml, startSecureServer, waitFor } from "../../support/apiserver-fixtures.ts";
import type { SecureServer } from "../../support/apiserver-fixtures.ts";

const MANIFEST = `apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: metrics, port: 9090, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
endpoints:
- addresses: ["10.244.1.5"]
  conditions: {ready: true}
- addresses: ["10.244.2.7"]
  conditions: {ready: false}
`;

interface Spec {
  spec: { clusterIP: string; ports: { name: string; port: number; targetPort: number; protocol: string }[] };
}

describe("kubectl against the test apiserver", () => {
  let s: SecureServer;
  let runner: ProcessRunner;
  let manifest: string;
  let kubectl: (...args: string[]) => Promise<ExecResult>;

  before(async () => {
    s = await startSecureServer();
    runner = new ProcessRunner();
    manifest = join(s.pki.dir, "web.yaml");
    await writeFile(manifest, MANIFEST);
    const cache = join(s.pki.dir, "kubectl-cache");
    kubectl = (...args) =>
      runner.run(["kubectl", "--kubeconfig", s.kubeconfig, "--cache-dir", cache, ...args], {
        timeoutMs: 30_000,
      });
  });
  after(async () => {
    await s.close();
  });

  test("apply, get, get -w, apply again, patch, delete — seen by kubectl and by our informer", async () => {
    const client = new KubeClient(await loadKubeconfig(s.kubeconfig), { qps: 0 });
    const seen: string[] = [];
    const abort = new AbortController();
    const informer = new Informer(client, SERVICES, {
      onAdd: (o) => void seen.push(`add ${o.meta.name}`),
      onUpdate: (_o, n) => void seen.push(`update ${n.meta.name}`),
      onDelete: (o) => void seen.push(`delete ${o.meta.name}`),
      onSynced: () => undefined,
    });
    const running = informer.run(abort.signal);
    try {
      const applied = await kubectl("apply", "-f", manifest);
      assert.equal(applied.stdout, "service/web created\nendpointslice.discovery.k8s.io/web-abc12 created\n");
      const stored = s.server.get("Service", "default", "web") as unknown as Spec;
      assert.deepEqual(
        stored.spec.ports.map((p) => [p.name, p.port, p.targetPort, p.protocol]),
        [
          ["http", 80, 8080, "TCP"],
          ["metrics", 9090, 9090, "TCP"],
        ],
        "the server defaulted protocol and targetPort",
      );
      await waitFor("informer add", () => seen.includes("add web"));

      const list = JSON.parse((await kubectl("get", "svc", "-o", "json")).stdout) as {
        kind: string;
        items: Spec[];
      };
      assert.equal(list.kind, "List");
      assert.equal(list.items[0]?.spec.clusterIP, stored.spec.clusterIP);

      const table = (await kubectl("get", "svc", "web")).stdout.split("\n");
      assert.match(table[0] ?? "", /^NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)\s+AGE$/);
      assert.match(
        table[1] ?? "",
        new RegExp(
          `^web\\s+ClusterIP\\s+${stored.spec.clusterIP.replaceAll(".", "\\.")}\\s+<none>\\s+80/TCP,9090/TCP\\s+\\d+s$`,
        ),
      );
      const slices = (await kubectl("get", "endpointslices")).stdout;
      assert.match(slices, /web-abc12\s+IPv4\s+8080\s+10\.244\.1\.5,10\.244\.2\.7/);

      const watch = kubectl(
        "get",
        "svc",
        "web",
        "-w",
        "--output-watch-events",
        "-o",
        "json",
        "--request-timeout=4s",
      );
      await waitFor("kubectl watch", () => s.server.activeWatches >= 2, 10_000);
      await writeFile(manifest, MANIFEST.replace("targetPort: 8080", "targetPort: 8081"));
      assert.match((await kubectl("apply", "-f", manifest)).stdout, /^service\/web configured\n/);
      const events = (await watch).stdout
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as { type: string; object: Spec });
      assert.deepEqual(
        events.map((e) => [e.type, e.object.spec.ports[0]?.targetPort]),
        [
          ["ADDED", 8080],
          ["MODIFIED", 8081],
        ],
      );
      const updated = s.server.get("Service", "default", "web") as unknown as Spec;
      assert.deepEqual(
        updated.spec.ports.map((p) => [p.name, p.targetPort]),
        [
          ["http", 8081],
          ["metrics", 9090],
        ],
        "the strategic merge patch kept the other port",
      );
      await waitFor("informer update", () => seen.includes("update web"));

      await kubectl(
        "patch",
        "svc",
        "web",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/ports/1/port","value":9191}]',
      );
      await kubectl("label", "svc", "web", "tier=frontend");
      const patched = JSON.parse((await kubectl("get", "svc", "web", "-o", "json")).stdout) as Spec & {
        metadata: { labels: Record<string, string> };
      };
      assert.equal(patched.spec.ports[1]?.port, 9191);
      assert.equal(patched.metadata.labels["tier"], "frontend");

      const deleted = await kubectl("delete", "-f", manifest);
      assert.equal(
        deleted.stdout,
        'service "web" deleted\nendpointslice.discovery.k8s.io "web-abc12" deleted\n',
      );
      await assert.rejects(kubectl("get", "svc", "web"), /NotFound.*services "web" not found/);
      await waitFor("informer delete", () => seen.includes("delete web"));
      assert.deepEqual(
        seen.filter((e) => !e.startsWith("update")),
        ["add web", "delete web"],
      );
    } finally {
      abort.abort();
      await running;
      client.close();
    }
  });

  test("ServiceCIDRs: kubectl applies, lists and deletes them while ApiServerSource reports the union", async () => {
    const path = join(s.pki.dir, "servicecidr.yaml");
    await writeFile(
      path,
      "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata:\n  name: extra\nspec:\n  cidrs: [10.112.0.0/16, fd00:112::/112]\n",
    );
    const client = new KubeClient(await loadKubeconfig(s.kubeconfig), { qps: 0 });
    const reported: (readonly string[] | null)[] = [];
    const abort = new AbortController();
    const running = new ApiServerSource({
      client,
      nodeName: "node-1",
      log: pino({ level: "silent" }),
      nodeWaitMs: 0,
    }).start(
      {
        onService: () => undefined,
        onEndpointSlice: () => undefined,
        onNode: () => undefined,
        onServiceCIDRs: (cidrs) => void reported.push(cidrs),
        onSynced: () => undefined,
      },
      abort.signal,
    );
    try {
      await waitFor("the empty list", () => reported.length === 1);
      assert.equal(
        (await kubectl("apply", "-f", path)).stdout,
        "servicecidr.networking.k8s.io/extra created\n",
      );
      const table = (await kubectl("get", "servicecidrs")).stdout.split("\n");
      assert.match(table[0] ?? "", /^NAME\s+CIDRS\s+AGE$/);
      assert.match(table[1] ?? "", /^extra\s+10\.112\.0\.0\/16,fd00:112::\/112\s+\d+s$/);
      await waitFor("the CIDRs", () => reported.length === 2);
      assert.deepEqual(reported[1], ["10.112.0.0/16", "fd00:112::/112"]);
      await kubectl("delete", "servicecidr", "extra");
      await waitFor("the deletion", () => reported.length === 3);
      assert.deepEqual(reported, [[], ["10.112.0.0/16", "fd00:112::/112"], []]);
    } finally {
      abort.abort();
      await running;
      client.close();
    }
  });

  test("server-side field validation: kubectl's strict default rejects typos, --validate=warn warns", async () => {
    const typo = join(s.pki.dir, "typo.yaml");
    await writeFile(
      typo,
      MANIFEST.split("---")[0]
        ?.replace("name: web", "name: typo")
        .replace("targetPort: 8080", "trgetPort: 8080") ?? "",
    );
    await assert.rejects(
      kubectl("apply", "-f", typo),
      /strict decoding error: unknown field "spec\.ports\[0\]\.trgetPort"/,
    );
    assert.equal(s.server.get("Service", "default", "typo"), undefined);
    const warned = await kubectl("apply", "--validate=warn", "-f", typo);
    assert.equal(warned.stdout, "service/typo created\n");
    assert.match(warned.stderr, /^Warning: unknown field "spec\.ports\[0\]\.trgetPort"$/m);
    await kubectl("delete", "svc", "typo");
  });

  test("kubectl with a token the server does not know is refused", async () => {
    const path = join(s.pki.dir, "bad-kubeconfig");
    await writeFile(
      path,
      kubeconfigYaml(s.server.url, { "certificate-authority": s.pki.ca.certFile }, { token: "nope" }),
    );
    await assert.rejects(
      runner.run(["kubectl", "--kubeconfig", path, "--cache-dir", join(s.pki.dir, "c2"), "get", "svc"], {
        timeoutMs: 30_000,
      }),
      /You must be logged in to the server/,
    );
  });
});
