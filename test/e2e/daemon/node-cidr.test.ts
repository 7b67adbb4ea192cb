import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WEB, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { endpointSlice, nodeObject, service, waitFor } from "../../support/daemon.ts";

/*
 * --detect-local-mode NodeCIDR with a Node whose spec.podCIDRs do not parse: the Node is refused
 * with a log line naming it and the field, the Services are still programmed, and nothing of the
 * bad value reaches a rule.
 */

const NODE = WEB.node;

describe("NodeCIDR local detection with an invalid Node podCIDR", { timeout: 120_000 }, () => {
  const env = withDaemonSandbox({ prefix: "kptcidr", topology: "bare", clusterCIDR: "" });

  it("refuses the podCIDR, names Node and field, and still programs the Services", async () => {
    const daemon = await env.start({
      args: ["--detect-local-mode", "NodeCIDR"],
      manifests: {
        // spec.podCIDRs only: the field NodeCIDR reads (nodeObject also sets the legacy podCIDR).
        "node.yaml": {
          ...nodeObject({ name: NODE, ips: ["192.168.50.1"], podCIDRs: [] }),
          spec: { podCIDRs: ["10.0.0.0/8]X"] },
        },
        "web.yaml": [
          service({ name: "web", clusterIP: "10.1.0.10", ports: [{ port: 80 }] }),
          endpointSlice({
            service: "web",
            endpoints: [{ ip: "10.244.0.5", node: NODE }],
            ports: [{ port: 80 }],
          }),
        ],
      },
    });
    const save = await daemon.waitForRules("the Service's rules", (s) =>
      s.includes("default/web cluster IP"),
    );
    assert.doesNotMatch(save, /\]X/);
    const line = await waitFor(
      "the invalid Node to be logged",
      async () => daemon.log.split("\n").find((l) => l.includes("spec.podCIDR")),
      10_000,
      () => daemon.logTail(),
    );
    assert.match(line, /Node node-1/);
    assert.match(line, /"field":"spec\.podCIDRs\[0\]"/);
    assert.match(line, /must be a CIDR/);

    assert.ok(daemon.running, daemon.logTail());
  });
});
