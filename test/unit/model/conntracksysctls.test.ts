import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultConfiguration } from "../../../src/config/types.ts";
import { conntrackSysctls } from "../../../src/proxy/conntracksysctls.ts";

test("defaults give upstream's start-up conntrack sysctls", () => {
  const out = conntrackSysctls(defaultConfiguration(), 2);
  assert.deepEqual(
    out.map(({ remedy: _, ...sysctl }) => sysctl),
    [
      { name: "net/netfilter/nf_conntrack_max", value: 131072, hostWide: true },
      { name: "net/netfilter/nf_conntrack_tcp_timeout_established", value: 86400, hostWide: false },
      { name: "net/netfilter/nf_conntrack_tcp_timeout_close_wait", value: 3600, hostWide: false },
    ],
  );
  // Each names the setting that leaves it alone (the message when it cannot be written).
  assert.match(
    out[1]?.remedy ?? "",
    /conntrack\.tcpEstablishedTimeout \(--conntrack-tcp-timeout-established\) to 0/,
  );
  assert.match(out[0]?.remedy ?? "", /--conntrack-max-per-core/);
});

test("max is maxPerCore × CPUs, at least min, at most 1048576; zero values leave sysctls alone", () => {
  const config = defaultConfiguration();
  config.conntrack = {
    ...config.conntrack,
    maxPerCore: 65536,
    min: 1,
    udpTimeout: "30s",
    tcpBeLiberal: true,
  };
  const byName = new Map(conntrackSysctls(config, 32).map((s) => [s.name, s.value]));
  assert.equal(byName.get("net/netfilter/nf_conntrack_max"), 1_048_576);
  assert.equal(byName.get("net/netfilter/nf_conntrack_udp_timeout"), 30);
  assert.equal(byName.get("net/netfilter/nf_conntrack_tcp_be_liberal"), 1);
  assert.equal(byName.has("net/netfilter/nf_conntrack_udp_timeout_stream"), false);
  config.conntrack = { ...config.conntrack, maxPerCore: 0, tcpEstablishedTimeout: "0s" };
  const names = conntrackSysctls(config, 32).map((s) => s.name);
  assert.ok(!names.includes("net/netfilter/nf_conntrack_max"), "maxPerCore 0 leaves the limit as it is");
  assert.ok(
    !names.includes("net/netfilter/nf_conntrack_tcp_timeout_established"),
    "a zero timeout is not written",
  );
});
