/**
 * The Service CIDRs feed `cluster-ips-check`'s drop of unallocated ClusterIPs (upstream
 * `OnServiceCIDRsChanged`): from ServiceCIDR objects, else `--service-cluster-ip-range`
 * (kube-apiserver's flag and format), one family's CIDRs per table.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { pino } from "pino";
import { NftablesWriter } from "../../../src/backends/nftables/proxier.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { renderCommand } from "../../../src/cli/render.ts";
import { parseServiceClusterIPRange } from "../../../src/config/flags.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import { FakeNft } from "../../support/nftables-fake.ts";
import { proxyState } from "../../support/iptables-builders.ts";

const fixture = (name: string) =>
  fileURLToPath(new URL(`../../fixtures/nftables/render/${name}`, import.meta.url));
const web = fileURLToPath(new URL("../../fixtures/nftables/baseRules.yaml", import.meta.url));

const dropRules = (payload: string) =>
  payload.split("\n").filter((l) => l.includes("Drop traffic to unallocated"));

test("--service-cluster-ip-range takes kube-apiserver's format: one CIDR or a dual-stack pair", () => {
  assert.deepEqual(parseServiceClusterIPRange("10.96.0.0/16"), ["10.96.0.0/16"]);
  assert.deepEqual(parseServiceClusterIPRange("10.96.0.1/16, fd00:10:96::/112"), [
    "10.96.0.0/16",
    "fd00:10:96::/112",
  ]);
  assert.throws(
    () => parseServiceClusterIPRange("10.96.0.0/16,10.97.0.0/16"),
    /at most one CIDR per IP family/,
  );
  assert.throws(() => parseServiceClusterIPRange("10.96.0.0"), /"10\.96\.0\.0" is not a CIDR/);
  assert.throws(() => parseServiceClusterIPRange("10.96.0.0/33"), /is not a CIDR/);
});

test("render: the flag's CIDRs, each family in its own table", async () => {
  const out = await renderCommand({
    filename: [web],
    proxyMode: "nftables",
    ipFamily: "dual",
    serviceClusterIpRange: ["10.96.0.0/16", "fd00:10:96::/112"],
  });
  assert.deepEqual(dropRules(out), [
    'add rule ip kube-proxy cluster-ips-check ip daddr { 10.96.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"',
    'add rule ip6 kube-proxy cluster-ips-check ip6 daddr { fd00:10:96::/112 } drop comment "Drop traffic to unallocated ClusterIPs"',
  ]);
});

test("render: ServiceCIDR objects win over the flag, merged and normalised", async () => {
  const out = await renderCommand({
    filename: [fixture("service-cidrs.yaml")],
    proxyMode: "nftables",
    ipFamily: "IPv4",
    serviceClusterIpRange: ["10.200.0.0/16"],
  });
  assert.deepEqual(dropRules(out), [
    'add rule ip kube-proxy cluster-ips-check ip daddr { 10.112.0.0/16,10.96.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"',
  ]);
});

test("render: no ServiceCIDRs and no flag, no drop rule", async () => {
  const out = await renderCommand({ filename: [web], proxyMode: "nftables", ipFamily: "IPv4" });
  assert.deepEqual(dropRules(out), []);
  assert.match(out, /add chain ip kube-proxy cluster-ips-check/);
});

test("the writer takes new CIDRs for the next full sync and says whether they changed", async () => {
  const fake = new FakeNft();
  const writer = new NftablesWriter({
    kernel: {
      apply: async (t) => fake.apply(t.payload),
      read: async () => ({ dump: fake.tableDump("ip", "kube-proxy"), ifIndex: () => 1 }),
    },
    settings: { ...upstreamTestSettings("IPv4"), serviceCIDRs: [] },
    clock: new FakeClock(),
    log: pino({ level: "silent" }),
  });
  const sync = () =>
    writer.write({
      state: proxyState([]),
      fullSync: true,
      changedServices: new Set(),
      onTransaction: () => undefined,
    });
  await sync();
  assert.deepEqual(dropRules(fake.dump("ip", "kube-proxy")), []);
  assert.equal(writer.setServiceCIDRs(["10.96.0.0/16"]), true);
  assert.equal(writer.setServiceCIDRs(["10.96.0.0/16"]), false);
  await sync();
  assert.equal(dropRules(fake.dump("ip", "kube-proxy")).length, 1);
  assert.match(dropRules(fake.dump("ip", "kube-proxy"))[0]!, /ip daddr \{ 10\.96\.0\.0\/16 \} drop/);
});
