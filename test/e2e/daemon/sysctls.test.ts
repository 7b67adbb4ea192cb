import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { selfArgv } from "../../../src/cli/self.ts";
import { runner, withNetns } from "../../support/netns.ts";

const read = async (netns: string | undefined, name: string) =>
  (
    await runner.run(["sysctl", "-n", name], { timeoutMs: 10_000, ...(netns === undefined ? {} : { netns }) })
  ).stdout.trim();

test("--init-only writes the conntrack sysctls in its own namespace and leaves the host-wide limit alone", async () => {
  const hostMax = await read(undefined, "net.netfilter.nf_conntrack_max");
  const manifests = mkdtempSync(join(tmpdir(), "kpt-sysctl-"));
  try {
    await withNetns(async (netns) => {
      const result = await runner.run(
        selfArgv([
          "--init-only",
          "--manifests",
          manifests,
          "--hostname-override",
          "node-1",
          "--conntrack-tcp-timeout-established",
          "2h",
          "--conntrack-tcp-timeout-close-wait",
          "90s",
          "--conntrack-udp-timeout",
          "45s",
          "--healthz-bind-address",
          "",
          "--metrics-bind-address",
          "",
        ]),
        { netns, timeoutMs: 60_000 },
      );
      assert.match(result.stderr, /Initialization done/);
      assert.match(result.stderr, /leaving the host-wide sysctl alone/);
      assert.equal(await read(netns, "net.netfilter.nf_conntrack_tcp_timeout_established"), "7200");
      assert.equal(await read(netns, "net.netfilter.nf_conntrack_tcp_timeout_close_wait"), "90");
      assert.equal(await read(netns, "net.netfilter.nf_conntrack_udp_timeout"), "45");
    });
  } finally {
    rmSync(manifests, { recursive: true, force: true });
  }
  assert.equal(
    await read(undefined, "net.netfilter.nf_conntrack_max"),
    hostMax,
    "the host's limit is untouched",
  );
});
