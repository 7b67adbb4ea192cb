import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { parse } from "yaml";
import { applyUpstreamDefaulting } from "../../../src/config/defaulting.ts";
import { resolveConfiguration } from "../../../src/config/load.ts";
import { defaultConfiguration } from "../../../src/config/types.ts";

/*
 * kubeadm's `kube-system/kube-proxy` ConfigMap (test/fixtures/kubeadm/, see the README there):
 * its config.conf spells every v1alpha1 field out, most at their zero value, and kube-proxy
 * reads it with `--config=/var/lib/kube-proxy/config.conf --hostname-override=$(NODE_NAME)`.
 * kube-proxy-ts must accept it unchanged, without a warning, and end with upstream's defaults
 * plus what kubeadm set.
 */

const fixture = new URL("../../fixtures/kubeadm/kube-proxy-configmap.yaml", import.meta.url);
const configMap = parse(readFileSync(fixture, "utf8")) as { data: Record<string, string> };

const dir = mkdtempSync(join(tmpdir(), "kpt-kubeadm-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;

function file(text: string): string {
  const path = join(dir, `config-${++files}.conf`);
  writeFileSync(path, text);
  return path;
}

test("kubeadm's config.conf is accepted unchanged, with kubeadm's DaemonSet flags, and no warning", () => {
  const { config, warnings } = resolveConfiguration({
    config: file(configMap.data["config.conf"]!),
    hostnameOverride: "node-1",
  });
  assert.deepEqual(warnings, []);
  const expected = defaultConfiguration();
  expected.clientConnection.kubeconfig = "/var/lib/kube-proxy/kubeconfig.conf";
  expected.clusterCIDR = "10.244.0.0/16";
  expected.hostnameOverride = "node-1";
  // logging and winkernel are kept as written: kube-proxy-ts reads only logging's verbosity and
  // format, and winkernel is for Windows.
  const { logging, winkernel, ...rest } = config as typeof config & { winkernel: unknown };
  const { logging: _defaultLogging, ...expectedRest } = expected;
  assert.deepEqual(rest, expectedRest);
  assert.deepEqual(winkernel, {
    enableDSR: false,
    forwardHealthCheckVip: false,
    networkName: "",
    rootHnsEndpointName: "",
    sourceVip: "",
  });
  assert.deepEqual(logging, {
    verbosity: 0,
    format: "text",
    flushFrequency: 0,
    options: { json: { infoBufferSize: "0" }, text: { infoBufferSize: "0" } },
  });
});

test("the zero values kubeadm writes take upstream's defaults, field by field", () => {
  const { config } = resolveConfiguration({ config: file(configMap.data["config.conf"]!) });
  // SetDefaults_KubeProxyConfiguration and platformApplyDefaults, value for value.
  assert.equal(config.mode, "iptables");
  assert.equal(config.detectLocalMode, "ClusterCIDR");
  assert.equal(config.bindAddress, "0.0.0.0");
  assert.equal(config.healthzBindAddress, "0.0.0.0:10256");
  assert.equal(config.metricsBindAddress, "127.0.0.1:10249");
  assert.equal(config.clientConnection.qps, 5);
  assert.equal(config.clientConnection.burst, 10);
  assert.equal(config.clientConnection.contentType, "application/vnd.kubernetes.protobuf");
  assert.equal(config.iptables.syncPeriod, "30s");
  assert.equal(config.iptables.minSyncPeriod, "1s");
  assert.equal(config.iptables.masqueradeBit, 14);
  assert.equal(config.iptables.localhostNodePorts, true);
  assert.equal(config.nftables.syncPeriod, "30s");
  assert.equal(config.nftables.minSyncPeriod, "1s");
  assert.equal(config.ipvs.syncPeriod, "30s");
  assert.equal(config.configSyncPeriod, "15m0s");
  assert.equal(config.oomScoreAdj, -999);
  assert.deepEqual(config.nodePortAddresses, null);
  assert.equal(config.conntrack.maxPerCore, 32768);
  assert.equal(config.conntrack.min, 131072);
  assert.equal(config.conntrack.tcpEstablishedTimeout, "24h0m0s");
  assert.equal(config.conntrack.tcpCloseWaitTimeout, "1h0m0s");
  // No default upstream: 0 leaves the kernel's UDP timeouts alone.
  assert.equal(config.conntrack.udpTimeout, "0s");
  assert.equal(config.conntrack.udpStreamTimeout, "0s");
});

test("kubeadm's mode: nftables ConfigMap runs nftables mode with nftables' defaults", () => {
  const text = configMap.data["config.conf"]!.replace(/^mode: ""$/m, "mode: nftables");
  assert.notEqual(text, configMap.data["config.conf"]);
  const { config } = resolveConfiguration({ config: file(text) });
  assert.equal(config.mode, "nftables");
  assert.equal(config.nftables.masqueradeBit, 14);
  assert.equal(config.nftables.minSyncPeriod, "1s");
});

test("health and metrics addresses default from bindAddress's family, and get their port when it is missing", () => {
  const v6 = applyUpstreamDefaulting({
    bindAddress: "fd00::1",
    healthzBindAddress: "",
    metricsBindAddress: "",
  });
  assert.equal(v6["healthzBindAddress"], "[::]:10256");
  assert.equal(v6["metricsBindAddress"], "[::1]:10249");
  const ports = applyUpstreamDefaulting({ healthzBindAddress: "10.0.0.1", metricsBindAddress: "::" });
  assert.equal(ports["healthzBindAddress"], "10.0.0.1:10256");
  assert.equal(ports["metricsBindAddress"], "[::]:10249");
  const kept = applyUpstreamDefaulting({ healthzBindAddress: "127.0.0.1:9999" });
  assert.equal(kept["healthzBindAddress"], "127.0.0.1:9999");
});

test("non-zero values stay as written, and the input object is not changed", () => {
  const data = {
    mode: "nftables",
    iptables: { minSyncPeriod: "0s", syncPeriod: "10s" },
    clientConnection: { qps: 20 },
  };
  const out = applyUpstreamDefaulting(data);
  assert.deepEqual(out["iptables"], { syncPeriod: "10s" });
  assert.deepEqual(out["clientConnection"], { qps: 20 });
  assert.equal(out["mode"], "nftables");
  assert.deepEqual(data.iptables, { minSyncPeriod: "0s", syncPeriod: "10s" });
});
