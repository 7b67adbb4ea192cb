import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { parse } from "yaml";
import { decodeEndpointSlice, decodeNode, decodeService } from "../../../src/k8s/objects.ts";
import { SEED, seedManifests, seedPod } from "../../../src/sandbox/seed.ts";

const examples = new URL("../../../examples/seed-nginx/", import.meta.url);

describe("seed manifests", () => {
  it("examples/seed-nginx holds exactly what seedManifests() generates for the seed's two pods", () => {
    const generated = seedManifests([seedPod(0), seedPod(1)]);
    for (const [file, text] of Object.entries(generated)) {
      assert.equal(readFileSync(new URL(file, examples), "utf8"), text, file);
    }
  });

  it("describes the seed's Service, endpoints and node, and decodes as valid objects", () => {
    const files = seedManifests([seedPod(0), seedPod(1), seedPod(2)]);
    const service = decodeService(parse(files["service.yaml"] ?? ""), "service.yaml");
    assert.equal(service.metadata.namespace, "default");
    assert.equal(service.metadata.name, "nginx");
    assert.equal(service.spec.type, "NodePort");
    assert.equal(service.spec.clusterIP, "10.1.125.152");
    assert.deepEqual(service.spec.ports, [{ name: "", protocol: "TCP", port: 80, nodePort: 30978 }]);

    const slice = decodeEndpointSlice(parse(files["endpointslice.yaml"] ?? ""), "endpointslice.yaml");
    assert.equal(slice.metadata.labels["kubernetes.io/service-name"], "nginx");
    assert.deepEqual(
      slice.endpoints.map((e) => [e.addresses, e.ready, e.nodeName]),
      [
        [["10.244.0.9"], true, SEED.node.name],
        [["10.244.0.10"], true, SEED.node.name],
        [["10.244.0.11"], true, SEED.node.name],
      ],
    );

    const node = decodeNode(parse(files["node.yaml"] ?? ""), "node.yaml");
    assert.deepEqual(node.status.addresses[0], { type: "InternalIP", address: SEED.node.ipv4 });
    assert.deepEqual(node.spec.podCIDRs, [SEED.node.podCIDR]);
  });

  it("names seed pods like a Deployment would, distinct and stable", () => {
    const names = Array.from({ length: 20 }, (_, i) => seedPod(i).name);
    assert.equal(new Set(names).size, names.length);
    for (const name of names) assert.match(name, /^nginx-6799fc88d8-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
    assert.equal(seedPod(1).name, names[1]);
    assert.throws(() => seedPod(SEED.maxPods));
  });
});
