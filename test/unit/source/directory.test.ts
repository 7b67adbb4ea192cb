import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { pino } from "pino";
import { writeManifests } from "../../../src/cli/demo.ts";
import { InputError } from "../../../src/errors.ts";
import type { EndpointSlice, Node, Service } from "../../../src/k8s/objects.ts";
import { seedPod } from "../../../src/sandbox/seed.ts";
import { DirectorySource } from "../../../src/source/directory.ts";
import { MAX_MANIFEST_FILE_BYTES } from "../../../src/source/manifests.ts";

const root = mkdtempSync(join(tmpdir(), "kpt-directory-"));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;

const SERVICE = `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  clusterIP: 10.1.0.10
  ports:
  - name: http
    port: 80
`;

function serviceWithPort(port: number): string {
  return SERVICE.replace("port: 80", `port: ${port}`);
}

const SLICE = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: { kubernetes.io/service-name: web }
addressType: IPv4
endpoints:
- addresses: [10.244.0.5]
ports:
- name: http
  port: 80
`;

/** A DirectorySource on a fresh folder, what it delivered, and its log lines. */
function harness(files: Record<string, string>, pollMs = 60_000) {
  const dir = join(root, `d${++dirs}`);
  mkdirSync(dir);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const services = new Map<string, Service>();
  const events: string[] = [];
  const lines: string[] = [];
  let synced = false;
  let node: Node | null = null;
  const log = pino({ level: "debug" }, { write: (line: string) => void lines.push(line) });
  const stop = new AbortController();
  const source = new DirectorySource(dir, "node-1", log, pollMs, 20);
  const done = source.start(
    {
      onService(previous: Service | null, current: Service | null) {
        const obj = (current ?? previous)!;
        const key = `${obj.metadata.namespace}/${obj.metadata.name}`;
        events.push(`${current === null ? "delete" : previous === null ? "add" : "update"} ${key}`);
        if (current === null) services.delete(key);
        else services.set(key, current);
      },
      onEndpointSlice(_p: EndpointSlice | null, current: EndpointSlice | null) {
        events.push(`slice ${current === null ? "delete" : "set"}`);
      },
      onNode(n: Node | null) {
        node = n;
      },
      onSynced() {
        synced = true;
      },
    },
    stop.signal,
  );
  return {
    dir,
    services,
    events,
    lines,
    done,
    get synced() {
      return synced;
    },
    get node() {
      return node;
    },
    write(name: string, text: string) {
      writeFileSync(join(dir, name), text);
    },
    async stop() {
      stop.abort();
      await done;
    },
  };
}

async function until(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("DirectorySource (standalone manifests folder)", () => {
  it("keeps a Service whose file was cut short right after `spec:`, and logs it once naming file, object and field", async () => {
    const h = harness({ "web.yaml": SERVICE });
    await until("initial sync", () => h.synced);
    assert.equal(h.services.get("default/web")?.spec.ports[0]?.port, 80);
    h.write("web.yaml", SERVICE.slice(0, SERVICE.indexOf("spec:") + "spec:\n".length));
    await until("the cut file to be logged", () => h.lines.some((l) => l.includes('"field":"spec"')));
    await sleep(200);
    assert.deepEqual(h.events, ["add default/web"]);
    const logged = h.lines.filter((l) => l.includes("web.yaml"));
    assert.equal(logged.length, 1, logged.join("\n"));
    assert.match(logged[0]!, /"object":"Service default\/web"/);
    assert.doesNotMatch(logged[0]!, /"stack"/);
    h.write("web.yaml", serviceWithPort(81));
    await until("the valid new version", () => h.services.get("default/web")?.spec.ports[0]?.port === 81);
    await h.stop();
  });

  it("keeps the previous version on a schema-invalid edit (port 70000) until a valid one arrives", async () => {
    const h = harness({ "web.yaml": `${SERVICE}---\n${SLICE}` });
    await until("initial sync", () => h.synced);
    h.write("web.yaml", `${serviceWithPort(70000)}---\n${SLICE}`);
    await until("the invalid port to be logged", () =>
      h.lines.some((l) => l.includes('"field":"spec.ports[0].port"') && l.includes("web.yaml")),
    );
    await sleep(100);
    assert.equal(h.services.get("default/web")?.spec.ports[0]?.port, 80);
    assert.ok(!h.events.includes("delete default/web"), h.events.join(","));
    assert.match(
      h.lines.find((l) => l.includes("spec.ports[0].port"))!,
      /"object":"Service default\/web","field":"spec.ports\[0\].port".*65535/,
    );
    h.write("web.yaml", `${serviceWithPort(8080)}---\n${SLICE}`);
    await until("the valid edit", () => h.services.get("default/web")?.spec.ports[0]?.port === 8080);
    await h.stop();
  });

  it("keeps a file's objects while it is not YAML or empty; deletes them when it is removed or a good file drops them", async () => {
    const h = harness({ "web.yaml": SERVICE, "other.yaml": SERVICE.replace("name: web", "name: other") });
    await until("initial sync", () => h.synced && h.services.size === 2);
    h.write("web.yaml", "kind: Service\nmetadata: {name: [\n");
    await until("the YAML error to be logged", () =>
      h.lines.some((l) => l.includes("Invalid manifests file")),
    );
    h.write("web.yaml", "");
    await until("the empty file to be logged", () => h.lines.some((l) => l.includes("is empty")));
    await sleep(100);
    assert.equal(h.services.size, 2);
    assert.ok(!h.lines.some((l) => l.includes('"stack"')), h.lines.join("\n"));
    rmSync(join(h.dir, "web.yaml"));
    await until("the removal", () => !h.services.has("default/web"));
    h.write("other.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    await until("the object removed from a good file", () => h.services.size === 0);
    await h.stop();
  });

  it("keeps a file's objects when it grows over the size limit, and says so once", async () => {
    const h = harness({ "web.yaml": SERVICE });
    await until("initial sync", () => h.synced);
    h.write("web.yaml", `${SERVICE}# ${"x".repeat(MAX_MANIFEST_FILE_BYTES)}\n`);
    await until("the oversized file to be logged", () => h.lines.some((l) => l.includes("too large")));
    assert.equal(h.services.get("default/web")?.spec.ports[0]?.port, 80);
    assert.deepEqual(h.events, ["add default/web"]);
    await h.stop();
  });

  it("re-reads a file only when it changed: one log line per bad file, not one per poll", async () => {
    const h = harness({ "bad.yaml": serviceWithPort(70000) }, 30);
    await until("initial sync", () => h.synced);
    await sleep(400);
    assert.equal(h.lines.filter((l) => l.includes("bad.yaml")).length, 1, h.lines.join("\n"));
    await h.stop();
  });

  it("sees a change the watcher missed through the slow poll (mtime or size)", async () => {
    const h = harness({ "web.yaml": SERVICE }, 50);
    await until("initial sync", () => h.synced);
    // A rename from outside the folder, as some tools do; the poll catches it either way.
    const outside = join(root, `outside-${dirs}.yaml`);
    writeFileSync(outside, serviceWithPort(82));
    renameSync(outside, join(h.dir, "web.yaml"));
    await until("the replaced file", () => h.services.get("default/web")?.spec.ports[0]?.port === 82);
    await h.stop();
  });

  it("fails (never reports synced) when the folder is missing or unreadable", async () => {
    const lines: string[] = [];
    const log = pino({ level: "debug" }, { write: (line: string) => void lines.push(line) });
    let synced = false;
    const source = new DirectorySource(join(root, "missing"), "node-1", log);
    await assert.rejects(
      source.start(
        {
          onService: () => undefined,
          onEndpointSlice: () => undefined,
          onNode: () => undefined,
          onSynced: () => (synced = true),
        },
        new AbortController().signal,
      ),
      (err: unknown) => err instanceof InputError && /cannot read the manifests folder/.test(err.message),
    );
    assert.equal(synced, false);
  });

  it("fails when the folder goes away while running", async () => {
    const h = harness({ "web.yaml": SERVICE }, 50);
    await until("initial sync", () => h.synced);
    rmSync(h.dir, { recursive: true, force: true });
    await assert.rejects(h.done, InputError);
    assert.ok(h.services.has("default/web"), "nothing is deleted on the way down");
  });
});

describe("demo manifests", () => {
  it("replace each file with one rename (a new inode), never rewriting it in place", () => {
    const dir = mkdtempSync(join(root, "demo-"));
    writeManifests(dir, [seedPod(0)]);
    const inodes = new Map<string, number>();
    const names = ["service.yaml", "endpointslice.yaml", "node.yaml"];
    for (const name of names) inodes.set(name, statSync(join(dir, name)).ino);
    writeManifests(dir, [seedPod(0), seedPod(1)]);
    for (const name of names) assert.notEqual(statSync(join(dir, name)).ino, inodes.get(name), name);
  });
});

describe("a stop during the first scan", () => {
  it("ends the source instead of waiting forever (the mode failed its checks meanwhile)", async () => {
    const dir = join(root, `abort-${dirs++}`);
    mkdirSync(dir);
    writeFileSync(join(dir, "svc.yaml"), SERVICE);
    const stop = new AbortController();
    const source = new DirectorySource(dir, "node-1", pino({ level: "silent" }), 60_000, 20);
    const done = source.start(
      {
        onService: () => stop.abort(),
        onEndpointSlice: () => undefined,
        onNode: () => undefined,
        onSynced: () => undefined,
      },
      stop.signal,
    );
    const outcome = await Promise.race([
      done.then(() => "ended"),
      new Promise((resolve) => setTimeout(() => resolve("hung"), 2_000).unref()),
    ]);
    assert.equal(outcome, "ended");
  });
});
