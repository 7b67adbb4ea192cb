/**
 * deploy/: the manifests decode, have the shape a node proxy needs (modelled on upstream's
 * kubeadm and kube-up kube-proxy DaemonSets), grant exactly the minimal RBAC, hand our own
 * loader a valid configuration, and start our CLI with flags it accepts. Docker cannot run here,
 * so the Dockerfile is checked statically (packages, copied paths, entrypoint and flags).
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { z } from "zod";
import { resolveConfiguration } from "../../../src/config/load.ts";
import { ENDPOINT_SLICES, NODES, SERVICE_CIDRS, SERVICES } from "../../../src/k8s/client.ts";
import type { ResourceRef } from "../../../src/k8s/client.ts";
import { ProcessRunner } from "../../../src/kernel/exec.ts";
import { startDiscoveryStub } from "./discovery-stub.ts";

const repo = fileURLToPath(new URL("../../../", import.meta.url));
const deployDir = join(repo, "deploy");
const work = mkdtempSync(join(tmpdir(), "kpt-deploy-"));
after(() => rmSync(work, { recursive: true, force: true }));
const runner = new ProcessRunner();

type Manifest = Record<string, unknown> & {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
};

const manifestHeader = z.looseObject({
  apiVersion: z.string().min(1),
  kind: z.string().min(1),
  metadata: z.looseObject({ name: z.string().min(1), namespace: z.string().optional() }),
});

function manifestFiles(): string[] {
  return readdirSync(deployDir)
    .filter((f) => /\.(ya?ml|json)$/.test(f))
    .sort()
    .map((f) => join(deployDir, f));
}

/** Every document of every manifest file; YAML errors and warnings fail, as kubectl's decoder would. */
function loadManifests(): Manifest[] {
  const out: Manifest[] = [];
  for (const file of manifestFiles()) {
    for (const doc of parseAllDocuments(readFileSync(file, "utf8"), { uniqueKeys: true })) {
      assert.deepEqual(doc.errors, [], `${file}: YAML errors`);
      assert.deepEqual(doc.warnings, [], `${file}: YAML warnings`);
      const value: unknown = doc.toJS();
      if (value === null) continue;
      out.push(manifestHeader.parse(value) as Manifest);
    }
  }
  return out;
}

function one(manifests: readonly Manifest[], kind: string): Manifest {
  const found = manifests.filter((m) => m.kind === kind);
  assert.equal(found.length, 1, `exactly one ${kind}`);
  return found[0] as Manifest;
}

const manifests = loadManifests();

test("deploy/ holds exactly the five objects of a node proxy, all in kube-system where namespaced", () => {
  assert.deepEqual(manifests.map((m) => `${m.apiVersion} ${m.kind}`).sort(), [
    "apps/v1 DaemonSet",
    "rbac.authorization.k8s.io/v1 ClusterRole",
    "rbac.authorization.k8s.io/v1 ClusterRoleBinding",
    "v1 ConfigMap",
    "v1 ServiceAccount",
  ]);
  for (const m of manifests) {
    const clusterScoped = m.kind === "ClusterRole" || m.kind === "ClusterRoleBinding";
    assert.equal(m.metadata.namespace, clusterScoped ? undefined : "kube-system", `${m.kind} namespace`);
    assert.match(m.metadata.name, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, `${m.kind} name is a DNS subdomain`);
  }
});

const configMapSchema = z.object({
  data: z.object({ "config.conf": z.string() }),
});

function configText(): string {
  return configMapSchema.parse(one(manifests, "ConfigMap")).data["config.conf"];
}

test("the ConfigMap's KubeProxyConfiguration is accepted by our loader, strictly (no warnings)", () => {
  const path = join(work, "config.conf");
  writeFileSync(path, configText());
  const { config, warnings } = resolveConfiguration({ config: path });
  assert.deepEqual(warnings, []);
  assert.equal(config.mode, "iptables");
  assert.equal(config.healthzBindAddress, "0.0.0.0:10256");
  assert.equal(config.iptables.masqueradeBit, 14);
  assert.equal(config.oomScoreAdj, -999);
});

test("the loader check can fail: a misspelt field warns and a wrong type is rejected", () => {
  const misspelt = join(work, "misspelt.conf");
  writeFileSync(misspelt, configText().replace("masqueradeAll:", "masqueradeALL:"));
  assert.equal(resolveConfiguration({ config: misspelt }).warnings.length, 1);
  const wrongType = join(work, "wrong-type.conf");
  writeFileSync(wrongType, configText().replace("masqueradeBit: 14", "masqueradeBit: fourteen"));
  assert.throws(() => resolveConfiguration({ config: wrongType }), /masqueradeBit/);
});

const probe = z.object({
  httpGet: z.object({ path: z.string(), port: z.union([z.number(), z.string()]) }),
});

const daemonSetSchema = z.object({
  spec: z.object({
    selector: z.object({ matchLabels: z.record(z.string(), z.string()) }),
    updateStrategy: z.object({ type: z.literal("RollingUpdate") }),
    template: z.object({
      metadata: z.object({ labels: z.record(z.string(), z.string()) }),
      spec: z.object({
        hostNetwork: z.literal(true),
        priorityClassName: z.literal("system-node-critical"),
        serviceAccountName: z.string(),
        nodeSelector: z.object({ "kubernetes.io/os": z.literal("linux") }),
        tolerations: z.array(z.looseObject({ operator: z.string(), key: z.string().optional() })),
        containers: z
          .array(
            z.object({
              name: z.string(),
              image: z.string(),
              args: z.array(z.string()),
              env: z.array(z.looseObject({ name: z.string() })),
              securityContext: z.looseObject({
                privileged: z.boolean().optional(),
                capabilities: z.object({ add: z.array(z.string()) }).optional(),
              }),
              livenessProbe: probe,
              readinessProbe: probe,
              volumeMounts: z.array(
                z.object({ name: z.string(), mountPath: z.string(), readOnly: z.boolean().optional() }),
              ),
            }),
          )
          .length(1),
        volumes: z.array(
          z.object({
            name: z.string(),
            configMap: z.object({ name: z.string() }).optional(),
            hostPath: z.object({ path: z.string(), type: z.string().optional() }).optional(),
          }),
        ),
      }),
    }),
  }),
});

const daemonSet = daemonSetSchema.parse(one(manifests, "DaemonSet"));
const podSpec = daemonSet.spec.template.spec;
const container = podSpec.containers[0] as (typeof podSpec.containers)[number];

function mountOf(hostPath: string): { mountPath: string; readOnly?: boolean | undefined } {
  const volume = podSpec.volumes.find((v) => v.hostPath?.path === hostPath);
  assert.ok(volume, `a hostPath volume for ${hostPath}`);
  const mount = container.volumeMounts.find((m) => m.name === volume.name);
  assert.ok(mount, `${hostPath} is mounted`);
  return mount;
}

test("the DaemonSet runs on every node's host network with netfilter rights, as upstream's", () => {
  assert.deepEqual(daemonSet.spec.selector.matchLabels, daemonSet.spec.template.metadata.labels);
  assert.ok(
    podSpec.tolerations.some((t) => t.operator === "Exists" && t.key === undefined),
    "tolerates every taint",
  );
  const caps = container.securityContext.capabilities?.add ?? [];
  assert.ok(
    container.securityContext.privileged === true || caps.includes("NET_ADMIN"),
    "privileged or NET_ADMIN",
  );
  // The lock must be the host's file, or our iptables-restore and the kubelet's/CNI's race.
  assert.equal(mountOf("/run/xtables.lock").mountPath, "/run/xtables.lock");
  assert.equal(
    podSpec.volumes.find((v) => v.hostPath?.path === "/run/xtables.lock")?.hostPath?.type,
    "FileOrCreate",
  );
  assert.deepEqual(mountOf("/lib/modules"), {
    name: "lib-modules",
    mountPath: "/lib/modules",
    readOnly: true,
  });
});

test("probes hit the health server the configuration binds: /livez for liveness, /healthz for readiness", () => {
  const path = join(work, "probe.conf");
  writeFileSync(path, configText());
  const port = Number(/:(\d+)$/.exec(resolveConfiguration({ config: path }).config.healthzBindAddress)?.[1]);
  assert.equal(port, 10256);
  assert.deepEqual(container.livenessProbe.httpGet, { path: "/livez", port });
  assert.deepEqual(container.readinessProbe.httpGet, { path: "/healthz", port });
});

test("the DaemonSet's --config points into the mounted ConfigMap, and NODE_NAME comes from spec.nodeName", () => {
  const configMap = one(manifests, "ConfigMap");
  const volume = podSpec.volumes.find((v) => v.configMap?.name === configMap.metadata.name);
  assert.ok(volume, "the ConfigMap is a volume");
  const mount = container.volumeMounts.find((m) => m.name === volume.name);
  assert.ok(mount, "the ConfigMap volume is mounted");
  // assert.ok always gets a message here: without one, node rebuilds the failing expression from
  // the tsx-transformed source, which can hang instead of failing.
  assert.ok(container.args.includes(`--config=${mount.mountPath}/config.conf`), "--config in the mount");
  assert.ok(container.args.includes("--hostname-override=$(NODE_NAME)"), "--hostname-override=$(NODE_NAME)");
  assert.deepEqual(
    container.env.find((e) => e.name === "NODE_NAME"),
    { name: "NODE_NAME", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
  );
});

interface Rule {
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
}

const ruleSchema = z.strictObject({
  apiGroups: z.array(z.string()),
  resources: z.array(z.string()),
  verbs: z.array(z.string()),
});

/** One (group, resource, verb) triple per permission, so that rule grouping does not matter. */
function permissions(rules: readonly Rule[]): string[] {
  const out = new Set<string>();
  for (const r of rules) {
    for (const g of r.apiGroups)
      for (const res of r.resources) for (const v of r.verbs) out.add(`${g}/${res}:${v}`);
  }
  return [...out].sort();
}

/**
 * Upstream's system:node-proxier (bootstrappolicy testdata/cluster-roles.yaml), with the
 * networking.k8s.io servicecidrs rule that kube-proxy's ServiceCIDR informer needs (v1.33+).
 */
const UPSTREAM_NODE_PROXIER: readonly Rule[] = [
  { apiGroups: [""], resources: ["endpoints", "services"], verbs: ["list", "watch"] },
  { apiGroups: [""], resources: ["nodes"], verbs: ["get", "list", "watch"] },
  { apiGroups: ["", "events.k8s.io"], resources: ["events"], verbs: ["create", "patch", "update"] },
  { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"] },
  { apiGroups: ["networking.k8s.io"], resources: ["servicecidrs"], verbs: ["list", "watch"] },
];

const clusterRole = one(manifests, "ClusterRole");
const rules = z.object({ rules: z.array(ruleSchema) }).parse(clusterRole).rules;

test("the ClusterRole is exactly the minimal set: upstream's node-proxier without core endpoints", () => {
  assert.deepEqual(permissions(rules), [
    "/events:create",
    "/events:patch",
    "/events:update",
    "/nodes:get",
    "/nodes:list",
    "/nodes:watch",
    "/services:list",
    "/services:watch",
    "discovery.k8s.io/endpointslices:list",
    "discovery.k8s.io/endpointslices:watch",
    "events.k8s.io/events:create",
    "events.k8s.io/events:patch",
    "events.k8s.io/events:update",
    "networking.k8s.io/servicecidrs:list",
    "networking.k8s.io/servicecidrs:watch",
  ]);
  const upstream = new Set(permissions(UPSTREAM_NODE_PROXIER));
  for (const p of permissions(rules)) assert.ok(upstream.has(p), `${p} is more than upstream grants`);
});

test("every resource our API client watches is granted list and watch", () => {
  const granted = new Set(permissions(rules));
  const watched: readonly ResourceRef[] = [SERVICES, ENDPOINT_SLICES, NODES, SERVICE_CIDRS];
  for (const r of watched) {
    for (const verb of ["list", "watch"])
      assert.ok(granted.has(`${r.group}/${r.plural}:${verb}`), `${r.plural} ${verb}`);
  }
});

test("the ClusterRoleBinding binds that ClusterRole to the DaemonSet's ServiceAccount", () => {
  const sa = one(manifests, "ServiceAccount");
  assert.equal(podSpec.serviceAccountName, sa.metadata.name);
  const binding = z
    .object({
      roleRef: z.object({ apiGroup: z.string(), kind: z.string(), name: z.string() }),
      subjects: z.array(
        z.looseObject({ kind: z.string(), name: z.string(), namespace: z.string().optional() }),
      ),
    })
    .parse(one(manifests, "ClusterRoleBinding"));
  assert.deepEqual(binding.roleRef, {
    apiGroup: "rbac.authorization.k8s.io",
    kind: "ClusterRole",
    name: clusterRole.metadata.name,
  });
  assert.deepEqual(binding.subjects, [
    { kind: "ServiceAccount", name: sa.metadata.name, namespace: sa.metadata.namespace },
  ]);
});

// A real --dry-run=server needs an apiserver that serves DaemonSets, ConfigMaps and RBAC; the
// project's test apiserver (test/support/apiserver.ts) serves only services, nodes and
// endpointslices, and no cluster is available here. kubectl's client dry-run still needs API
// discovery to map kinds to resources, which the stub answers. Without an OpenAPI document
// offline, --validate=false: kubectl checks decoding and kinds, the schemas above check fields.
async function kubectlDryRun(
  path: string,
): Promise<{ exitCode: number; stdout: string; stderr: string; writes: readonly string[] }> {
  const stub = await startDiscoveryStub();
  const emptyKubeconfig = join(work, "kubeconfig");
  writeFileSync(emptyKubeconfig, "");
  try {
    const result = await runner.run(
      [
        "kubectl",
        `--kubeconfig=${emptyKubeconfig}`,
        `--server=${stub.url}`,
        `--cache-dir=${join(work, "kube-cache")}`,
        "apply",
        "--dry-run=client",
        "--validate=false",
        "-f",
        path,
        "-o",
        "yaml",
      ],
      { okExitCodes: [0, 1], timeoutMs: 60_000 },
    );
    return { exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr, writes: stub.writes };
  } finally {
    await stub.close();
  }
}

test("kubectl apply --dry-run=client -f deploy/ decodes every object and writes nothing", async () => {
  const result = await kubectlDryRun(deployDir);
  assert.equal(result.exitCode, 0, result.stderr);
  assert.deepEqual(result.writes, []);
  const list = z
    .object({ kind: z.literal("List"), items: z.array(manifestHeader) })
    .parse(parseYaml(result.stdout));
  assert.deepEqual(
    list.items.map((i) => `${i.kind}/${i.metadata.name}`).sort(),
    manifests.map((m) => `${m.kind}/${m.metadata.name}`).sort(),
  );
});

test("the kubectl check can fail: a kind the cluster does not serve is refused", async () => {
  writeFileSync(join(work, "bad.yaml"), "apiVersion: apps/v1\nkind: Deamonset\nmetadata:\n  name: x\n");
  const result = await kubectlDryRun(join(work, "bad.yaml"));
  assert.notEqual(result.exitCode, 0);
  assert.match(result.stderr, /Deamonset/);
});

function dockerInstruction(dockerfile: string, name: string): string[] {
  const lines = dockerfile.split("\n").filter((l) => l.startsWith(`${name} `));
  assert.equal(lines.length, 1, `one ${name}`);
  return z.array(z.string()).parse(JSON.parse((lines[0] as string).slice(name.length + 1)));
}

const dockerfile = readFileSync(join(deployDir, "Dockerfile"), "utf8");
const entrypoint = dockerInstruction(dockerfile, "ENTRYPOINT");
const cmd = dockerInstruction(dockerfile, "CMD");

/** The image's entrypoint, pointed at this checkout: the same shim and sources the image copies. */
function localEntrypoint(): string[] {
  const [node, script, ...rest] = entrypoint;
  assert.equal(node, "node");
  // The image is the last stage: its WORKDIR is the last one.
  const workdir = [...dockerfile.matchAll(/^WORKDIR (\S+)$/gm)].at(-1)?.[1];
  assert.ok(
    workdir !== undefined && script !== undefined && script.startsWith(`${workdir}/`),
    "the entrypoint script is under WORKDIR",
  );
  const relative = script.slice(workdir.length + 1);
  const pkg = z
    .object({ bin: z.record(z.string(), z.string()) })
    .parse(JSON.parse(readFileSync(join(repo, "package.json"), "utf8")));
  assert.ok(Object.values(pkg.bin).includes(relative), "the entrypoint is the package's bin");
  return [process.execPath, join(repo, relative), ...rest];
}

function flagNames(args: readonly string[]): string[] {
  return args.filter((a) => a.startsWith("-")).map((a) => a.split("=")[0] as string);
}

test("the Dockerfile's CMD and the DaemonSet's args use only flags the daemon declares", async () => {
  const help = (await runner.run([...localEntrypoint(), "run", "--help"], { timeoutMs: 60_000 })).stdout;
  const declared = new Set(help.match(/--[a-z0-9-]+/g) ?? []);
  assert.ok(declared.has("--config") && !declared.has("--no-such-flag"), "help lists flags");
  for (const flag of [...flagNames(cmd), ...flagNames(container.args)]) {
    assert.ok(declared.has(flag), `${flag} is a flag of kube-proxy-ts run`);
  }
  assert.ok(
    cmd.some((a) => a.startsWith("--config=")),
    "CMD reads the config file",
  );
});

test("the DaemonSet's exact args start our CLI: the mounted config is loaded and validated", async () => {
  const configPath = join(work, "mounted.conf");
  writeFileSync(configPath, configText());
  const written = join(work, "written.yaml");
  const args = container.args.map((a) =>
    a.startsWith("--config=") ? `--config=${configPath}` : a.replace("$(NODE_NAME)", "node-a"),
  );
  await runner.run([...localEntrypoint(), ...args, `--write-config-to=${written}`], { timeoutMs: 60_000 });
  const config = z
    .looseObject({ mode: z.string(), healthzBindAddress: z.string(), metricsBindAddress: z.string() })
    .parse(parseYaml(readFileSync(written, "utf8")));
  assert.equal(config.mode, "iptables");
  assert.equal(config.healthzBindAddress, "0.0.0.0:10256");
  assert.equal(config.metricsBindAddress, "127.0.0.1:10249");
});

test("the image installs every kernel tool package setup.sh requires for the daemon", () => {
  const run = /RUN apt-get update[\s\S]*?install -y --no-install-recommends\s*\\?\n([\s\S]*?)\\?\n\s*&&/.exec(
    dockerfile,
  );
  assert.ok(run, "an apt-get install step");
  const installed = new Set((run[1] as string).split(/\s+/).filter((w) => w !== "" && w !== "\\"));
  const setup = readFileSync(join(repo, "scripts", "setup.sh"), "utf8");
  const required = [...setup.matchAll(/need_pkgs\+=\(([^)]+)\)/g)].flatMap((m) =>
    (m[1] as string).split(/\s+/),
  );
  // Test and demo tools, the tools that build the image and the ipvs suite's VM, and Node.js,
  // which the base image provides.
  const notForTheDaemon = new Set([
    "openssl",
    "kubernetes-client",
    "chromium",
    "nodejs",
    "npm",
    "mmdebstrap",
    "umoci",
    "crun",
    "qemu-system-x86",
    "lz4",
    "zstd",
  ]);
  const needed = required.filter((p) => !notForTheDaemon.has(p));
  assert.ok(needed.includes("iptables") && needed.includes("conntrack"), "setup.sh parsed");
  for (const pkg of needed) assert.ok(installed.has(pkg), `${pkg} installed in the image`);
  // npm run image pins the same packages (scripts/image/versions.env, name=version).
  const versions = readFileSync(join(repo, "scripts", "image", "versions.env"), "utf8");
  const pinned = /^DEBIAN_PACKAGES="([^"]+)"$/m.exec(versions);
  assert.ok(pinned, "DEBIAN_PACKAGES in versions.env");
  const pinnedNames = new Set((pinned[1] as string).split(" ").map((p) => p.split("=")[0]));
  for (const pkg of needed) assert.ok(pinnedNames.has(pkg), `${pkg} pinned in scripts/image/versions.env`);
  assert.match(dockerfile, /^FROM node:(2[2-9]|[3-9]\d)-bookworm-slim$/m, "a current Node.js LTS base");
});

test("every path the Dockerfile copies exists and survives .dockerignore", () => {
  const ignore = readFileSync(join(repo, ".dockerignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  assert.equal(ignore[0], "*", "context is an allow-list");
  const allowed = new Set(ignore.slice(1).map((l) => l.replace(/^!/, "").replace(/\/$/, "")));
  // `COPY --from=build` takes what the build stage compiled, not the context.
  const copies = [...dockerfile.matchAll(/^COPY (?!--from=)(.+) \S+$/gm)].flatMap((m) =>
    (m[1] as string).split(/\s+/),
  );
  assert.match(dockerfile, /^COPY --from=build \/src\/dist\/ dist\/$/m, "the image runs the compiled build");
  assert.ok(copies.length >= 5, "COPY steps parsed");
  for (const source of copies) {
    const path = source.replace(/\/$/, "");
    assert.ok(existsSync(join(repo, path)), `${path} exists`);
    assert.ok(allowed.has(path), `${path} is in the build context`);
  }
  assert.ok(copies.includes("package-lock.json"), "npm ci needs the lock file");
});

test("the image's node flags: one line of the Dockerfile, read by the image build, accepted by node", async () => {
  const line = /^ENV NODE_OPTIONS=(.+)$/m.exec(dockerfile)?.[1];
  assert.ok(line !== undefined && line.startsWith("--"), "deploy/Dockerfile sets NODE_OPTIONS");
  const build = readFileSync(join(repo, "scripts/image/build.sh"), "utf8");
  assert.ok(build.includes("sed -n 's/^ENV NODE_OPTIONS=//p' deploy/Dockerfile"), "build.sh reads it");
  assert.ok(build.includes('--config.env "NODE_OPTIONS=$node_options"'), "build.sh sets it in the image");
  const result = await runner.run([process.execPath, ...line.split(/\s+/), "-e", "0"], { timeoutMs: 30_000 });
  assert.equal(result.exitCode ?? 0, 0);
});
