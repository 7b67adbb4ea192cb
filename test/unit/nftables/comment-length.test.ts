/**
 * nft refuses a comment over 128 characters ("comment too long, 128 characters maximum
 * allowed") and with it the whole transaction. A Service port's name (`namespace/name:port`,
 * up to 63 + 1 + 63 + 1 + 63 characters) is the comment of its no-endpoint elements: a long one
 * must be shortened, not fail every sync. Found by the fuzz campaign (docs/reliability.md).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { renderNftables } from "../../../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { planFullSync } from "../../../src/backends/nftables/transactions.ts";
import { proxyState, servicePort } from "../../support/iptables-builders.ts";

test("element comments stay within nft's 128-character limit for the longest Service port names", () => {
  const long = "a".repeat(63);
  const sp = servicePort({
    namespace: long,
    name: "b".repeat(63),
    portName: "c".repeat(63),
    clusterIP: "172.30.0.41",
    nodePort: 30001,
    externalIPs: ["192.168.99.11"],
  });
  const ruleset = renderNftables({ state: proxyState([[sp, []]]), settings: upstreamTestSettings("IPv4") });
  const payload = planFullSync(ruleset, null, { resetBaseChains: true }).payload;
  const comments = [...payload.matchAll(/comment "([^"]*)"/g)].map((m) => m[1]!);
  assert.ok(
    comments.some((c) => c.startsWith(`${long}/`)),
    "the no-endpoint elements carry the port name",
  );
  for (const c of comments) assert.ok(c.length <= 128, `comment of ${c.length} characters: ${c}`);
});
