import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { diffCommand } from "../../../src/cli/diff.ts";
import { renderCommand } from "../../../src/cli/render.ts";
import { TestApiServer } from "../../support/apiserver.ts";
import { endpointSlice, service } from "../../support/daemon.ts";

// diffCommand itself: the test runner reports on this process's stdout, which a CLI run would take.
const NODE = { hostnameOverride: "n1", ipFamily: "IPv4" };

describe("diff --api: the objects of an API server, as the daemon's source lists them", () => {
  const dir = mkdtempSync(join(tmpdir(), "kpt-diff-api-"));
  let server: TestApiServer;
  let master: string;
  const web = service({ name: "web", clusterIP: "10.1.0.10", ports: [{ port: 80 }] });
  const webSlice = endpointSlice({
    service: "web",
    endpoints: [{ ip: "10.244.0.5", node: "n1" }],
    ports: [{ port: 80 }],
  });
  const objects = join(dir, "objects.json");
  const dump = join(dir, "node.rules");

  before(async () => {
    server = await TestApiServer.start({ allowAnonymous: true });
    master = server.url.replace(/^http:\/\//, "");
    server.put(web);
    server.put(webSlice);
    // Another proxy's Service: the daemon's label selector leaves it out, so must diff --api.
    const other = service({ name: "other", clusterIP: "10.1.0.11", ports: [{ port: 80 }] });
    server.put({
      ...other,
      metadata: {
        ...(other["metadata"] as object),
        labels: { "service.kubernetes.io/service-proxy-name": "elsewhere" },
      },
    });
    writeFileSync(objects, JSON.stringify({ apiVersion: "v1", kind: "List", items: [web, webSlice] }));
    const rendered = await renderCommand({ filename: [objects], nodeRuleset: true, ...NODE });
    writeFileSync(dump, rendered);
  });

  after(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("reports what -f of the same objects reports, and no drift against their own node ruleset", async () => {
    const fromApi = await diffCommand({ api: true, master, ruleset: dump, ...NODE, output: "json" });
    const fromFile = await diffCommand({ filename: [objects], ruleset: dump, ...NODE, output: "json" });
    assert.deepEqual(JSON.parse(fromApi), JSON.parse(fromFile));
    assert.equal((JSON.parse(fromApi) as { reports: { inSync: boolean }[] }).reports[0]?.inSync, true);
    assert.doesNotMatch(fromApi, /default\/other/);
    const text = await diffCommand({ api: true, master, ruleset: dump, ...NODE });
    assert.match(text, /intended: rendered from the API server's objects \(--api\) for node n1/);
  });

  it("sees a Service added on the API server as missing from the kernel", async () => {
    server.put(service({ name: "late", clusterIP: "10.1.0.12", ports: [{ port: 8080 }] }));
    const report = JSON.parse(
      await diffCommand({ api: true, master, ruleset: dump, ...NODE, output: "json" }),
    ) as { reports: { inSync: boolean; services: { service: string }[] }[] };
    assert.equal(report.reports[0]?.inSync, false);
    assert.deepEqual(
      report.reports[0]?.services.map((s) => s.service),
      ["default/late"],
    );
    const fromFile = await diffCommand({ filename: [objects], ruleset: dump, ...NODE, output: "json" });
    assert.doesNotMatch(fromFile, /default\/late/);
  });

  it("refuses --api together with -f", async () => {
    await assert.rejects(
      diffCommand({ api: true, filename: [objects], ruleset: dump, ...NODE }),
      /either --api or the objects/,
    );
  });
});
