import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { parse, parseAllDocuments, stringify } from "yaml";
import type { BackgroundProcess } from "../../../src/kernel/spawn.ts";
import { probeHttp } from "../../../src/sandbox/client.ts";
import { buildSeedTopology, SEED, seedManifests, seedPod } from "../../../src/sandbox/seed.ts";
import { Sandbox } from "../../../src/sandbox/topology.ts";
import { kubeconfigYaml, startSecureServer, TEST_TOKEN } from "../../support/apiserver-fixtures.ts";
import type { SecureServer } from "../../support/apiserver-fixtures.ts";
import { NetnsApiBridge, IN_NAMESPACE_PORT } from "../../support/apiserver-netns.ts";
import { addNodeDefaultRoute, nodeMetrics, waitForFirstSync } from "../../support/daemon.ts";
import {
  configMapConfig,
  daemonSetArgs,
  ImageBundle,
  imageBuilt,
  IMAGE_LAYOUT,
} from "../../support/image.ts";

/*
 * The image as a kubelet would run it: `npm run image`'s OCI layout, unpacked and started by crun
 * in the seed's node namespace with the DaemonSet's args and the ConfigMap's config.conf (its
 * kubeconfig pointed at the test apiserver, as kubeadm's points at the control plane). The seed's
 * Service is served through the rules it programs, /healthz answers, and `--cleanup` run from the
 * image leaves no rule, chain or table of any mode (but kubelet's shared KUBE-FIREWALL, as upstream).
 * Last, the image runs as kubeadm's own kube-proxy DaemonSet would run it after an image swap:
 * `command: [/usr/local/bin/kube-proxy]`, kubeadm's ConfigMap files, a service account token.
 *
 * Gated: scripts/test.sh builds the image (KPT_WITH_IMAGE=1 setup, then npm run image, which
 * reuses its cached Debian layer) and sets KPT_IMAGE_TEST=1; without it this file is skipped and
 * says so.
 */

const enabled = process.env["KPT_IMAGE_TEST"] === "1";
const KUBEADM_CONFIGMAP = new URL("../../fixtures/kubeadm/kube-proxy-configmap.yaml", import.meta.url);
const METRICS = "127.0.0.1:10249";
const HEALTHZ = "127.0.0.1:10256";

/** Kubernetes objects of the seed's manifests (Service, EndpointSlice, Node). */
function seedObjects(): unknown[] {
  const files = seedManifests([seedPod(0), seedPod(1)]);
  return Object.values(files).flatMap((text) => parseAllDocuments(text).map((d) => d.toJS() as unknown));
}

/** config.conf of deploy/configmap.yaml, but with the kubeconfig of the ConfigMap volume. */
function nodeConfig(): string {
  const config = parse(configMapConfig()) as { clientConnection: { kubeconfig: string } };
  config.clientConnection.kubeconfig = "/var/lib/kube-proxy-ts/kubeconfig";
  return stringify(config);
}

describe(
  "the image (npm run image), run by crun as the DaemonSet runs it",
  { skip: !enabled && "KPT_IMAGE_TEST=1 not set (scripts/test.sh sets it after npm run image)" },
  () => {
    let sandbox: Sandbox;
    let secure: SecureServer;
    let bridge: NetnsApiBridge;
    let image: ImageBundle;
    let container: { id: string; process: BackgroundProcess } | undefined;

    const node = SEED.node.name;
    const log = () =>
      `\n--- container log (tail) ---\n${(container?.process.stderr ?? "").trimEnd().split("\n").slice(-30).join("\n")}`;
    const configFiles = () => ({
      "config.conf": nodeConfig(),
      kubeconfig: kubeconfigYaml(
        `https://127.0.0.1:${IN_NAMESPACE_PORT}`,
        { "certificate-authority-data": Buffer.from(secure.pki.ca.cert).toString("base64") },
        { token: TEST_TOKEN },
      ),
    });
    const rules = async () => {
      const out: string[] = [];
      for (const tool of ["iptables-save", "ip6tables-save"])
        out.push((await sandbox.exec(node, [tool])).stdout);
      out.push((await sandbox.exec(node, ["nft", "list", "ruleset"])).stdout);
      return out.join("\n");
    };

    before(async () => {
      assert.ok(imageBuilt(), `${IMAGE_LAYOUT} is missing: run npm run image`);
      sandbox = await Sandbox.create({ prefix: "kptimg" });
      await buildSeedTopology(sandbox);
      await addNodeDefaultRoute(sandbox, node, "192.168.50.254");
      secure = await startSecureServer();
      for (const object of seedObjects()) secure.server.put(object);
      bridge = await NetnsApiBridge.start(sandbox, node, secure);
      image = await ImageBundle.unpack();
    });

    after(async () => {
      try {
        if (container !== undefined) await image.stop(container.id, container.process);
      } finally {
        await image?.dispose();
        await bridge?.close();
        await secure?.close();
        await sandbox?.dispose();
      }
    });

    it("has the entrypoint, user and working directory the DaemonSet relies on", () => {
      const spec = image.imageProcess();
      assert.deepEqual(spec.args, [
        "/usr/local/bin/node",
        "/opt/kube-proxy-ts/bin/kube-proxy-ts.js",
        "--config=/var/lib/kube-proxy-ts/config.conf",
      ]);
      assert.deepEqual(spec.user, { uid: 0, gid: 0 });
      assert.equal(spec.cwd, "/opt/kube-proxy-ts");
      assert.ok(spec.env.includes("NODE_ENV=production"), JSON.stringify(spec.env));
    });

    it("starts with the DaemonSet's args, syncs, and serves the seed's Service and /healthz", async () => {
      container = image.start(sandbox, node, {
        args: daemonSetArgs(node),
        env: { NODE_NAME: node },
        volumes: { "/var/lib/kube-proxy-ts": configFiles() },
      });
      const running = container;
      await waitForFirstSync(
        running.process,
        () => nodeMetrics(sandbox, node, METRICS),
        ["IPv4"],
        90_000,
        log,
      );
      const clusterIP = await probeHttp(sandbox, SEED.external.name, {
        host: SEED.clusterIP,
        port: SEED.port,
        count: 10,
      });
      assert.deepEqual(clusterIP.errors, {}, `ClusterIP: ${JSON.stringify(clusterIP)}${log()}`);
      assert.deepEqual(Object.keys(clusterIP.byPod).sort(), [seedPod(0).name, seedPod(1).name].sort());
      const nodePort = await probeHttp(sandbox, SEED.external.name, {
        host: SEED.node.ipv4,
        port: SEED.nodePort,
        count: 6,
      });
      assert.deepEqual(nodePort.errors, {}, `NodePort: ${JSON.stringify(nodePort)}${log()}`);
      const healthz = await sandbox.exec(node, [
        "curl",
        "-sS",
        "--max-time",
        "5",
        "-w",
        "\n%{http_code}",
        `http://${HEALTHZ}/healthz`,
      ]);
      assert.match(healthz.stdout, /\n200$/, healthz.stdout);
      assert.match(healthz.stdout, /"lastUpdated"/, healthz.stdout);
      assert.match(await rules(), /KUBE-SVC-/);
    });

    it("--cleanup from the image removes every rule, chain and table it made", async () => {
      if (container !== undefined) await image.stop(container.id, container.process);
      container = undefined;
      assert.match(await rules(), /KUBE-SVC-/, "SIGTERM leaves the rules in place, as upstream");
      await image.run(
        sandbox,
        node,
        { args: ["--cleanup"], volumes: { "/var/lib/kube-proxy-ts": configFiles() } },
        60_000,
      );
      // As upstream, --cleanup leaves KUBE-FIREWALL and its jumps: kubelet creates the same chain.
      const left = (await rules())
        .split("\n")
        .filter((line) => !/KUBE-FIREWALL|block incoming localnet/.test(line))
        .join("\n");
      assert.doesNotMatch(left, /KUBE-|kube-proxy/, left);
    });

    it("runs as kubeadm's DaemonSet does: its command, and its ConfigMap as kubeadm writes it", async () => {
      // kubeadm's kube-proxy addon (test/fixtures/kubeadm/): the same ConfigMap files, only the
      // control-plane endpoint placeholder pointed at the test apiserver, and the pod's service
      // account token and CA where the kubelet mounts them.
      const fixture = parse(readFileSync(KUBEADM_CONFIGMAP, "utf8")) as { data: Record<string, string> };
      const kubeconfig = fixture.data["kubeconfig.conf"]!.replace(
        "https://control-plane.example:6443",
        `https://127.0.0.1:${IN_NAMESPACE_PORT}`,
      );
      assert.notEqual(kubeconfig, fixture.data["kubeconfig.conf"]);
      container = image.start(sandbox, node, {
        command: ["/usr/local/bin/kube-proxy"],
        args: ["--config=/var/lib/kube-proxy/config.conf", `--hostname-override=${node}`],
        volumes: {
          "/var/lib/kube-proxy": {
            "config.conf": fixture.data["config.conf"]!,
            "kubeconfig.conf": kubeconfig,
          },
          "/var/run/secrets/kubernetes.io/serviceaccount": {
            token: TEST_TOKEN,
            "ca.crt": secure.pki.ca.cert,
            namespace: "kube-system",
          },
        },
      });
      const running = container;
      await waitForFirstSync(
        running.process,
        () => nodeMetrics(sandbox, node, METRICS),
        ["IPv4"],
        90_000,
        log,
      );
      assert.doesNotMatch(running.process.stderr, /strict decoding failed|unknown field/i, log());
      const report = await probeHttp(sandbox, SEED.external.name, {
        host: SEED.clusterIP,
        port: SEED.port,
        count: 6,
      });
      assert.deepEqual(report.errors, {}, `ClusterIP: ${JSON.stringify(report)}${log()}`);
      const healthz = await sandbox.exec(node, [
        "curl",
        "-sS",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        `http://${HEALTHZ}/healthz`,
      ]);
      assert.equal(healthz.stdout, "200");
    });
  },
);
