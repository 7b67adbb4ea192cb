import { iptablesInspectionSource } from "../../../src/backends/iptables/inspect.ts";
import type { InspectionSource } from "../../../src/inspect/types.ts";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { describe, it } from "node:test";
import type { ExecOptions, ExecResult, Runner } from "../../../src/kernel/exec.ts";
import { Iptables } from "../../../src/kernel/iptables.ts";
import { parseIptablesSave } from "../../../src/netfilter/iptables-save.ts";
import { packetFromFlags, tracePacket, traceToJson } from "../../../src/netfilter/tracer.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import {
  allowedHost,
  countersEvent,
  createWebHandler,
  parseRuleQuery,
  safeJson,
  serveWeb,
  SnapshotCache,
  snapshotOf,
  webBindAddress,
} from "../../../src/server/web.ts";

const fixture = readFileSync(
  new URL("../netfilter/fixtures/iptables-save-c.netns.txt", import.meta.url),
  "utf8",
);
const HOSTILE = "<img src=x onerror=alert(1)>";
/** The capture plus a foreign filter rule whose comment is markup, as any root user could add. */
const dump = fixture.replace(
  /(\*filter[\s\S]*?)\nCOMMIT/,
  `$1\n[7:420] -A INPUT -s 10.66.0.1/32 -p tcp -m comment --comment "${HOSTILE}" -m tcp --dport 8443 -j ACCEPT\nCOMMIT`,
);
const LOCAL = ["127.0.0.1", "172.30.0.1"];

function staticSource(dumps: () => string[]): InspectionSource & { reads: number } {
  const source = {
    reads: 0,
    read() {
      source.reads++;
      return Promise.resolve({ mode: "iptables" as const, dumps: dumps(), localAddresses: LOCAL });
    },
  };
  return source;
}

function handlerFor(text = dump) {
  return createWebHandler(
    new SnapshotCache(
      staticSource(() => [text]),
      new FakeClock(0),
    ),
  );
}

async function getJson(
  path: string,
  query = "",
): Promise<{ status: number; body: Record<string, unknown>; raw: string }> {
  const res = await handlerFor()({ method: "GET", path, query: new URLSearchParams(query) });
  return { status: res.status, body: JSON.parse(res.body) as Record<string, unknown>, raw: res.body };
}

interface ServiceJson {
  service: string;
  endpoints: { endpoint: string; probability: number; packets: number | null; counterKey?: string }[];
  graph: {
    nodes: { id: string; kind: string; label: string; detail: string; column: number; counterKey?: string }[];
    edges: { from: string; to: string; label: string }[];
  };
}

describe("web view API", () => {
  it("lists the Services of the ruleset; a Service's page has endpoints, shares, counters, a graph and the walk", async () => {
    const { status, body } = await getJson("/api/services");
    assert.equal(status, 200);
    const services = body["services"] as { family: number; service: string; frontends: string[] }[];
    assert.deepEqual(
      services.map((s) => [s.family, s.service]),
      [
        [4, "ns1/svc1"],
        [4, "ns3/svc3"],
        [4, "ns4/svc4"],
      ],
    );
    assert.ok(services[1]!.frontends.includes("172.30.0.43:80/tcp"), services[1]!.frontends.join(", "));
    const page = await getJson("/api/service", "service=4/ns3/svc3");
    assert.equal(page.status, 200);
    const svc3 = page.body as unknown as ServiceJson & {
      walk: { depth: number; text: string; counterKey?: string; packets?: number }[];
    };
    assert.deepEqual(
      svc3.endpoints.map((e) => [e.endpoint, e.probability, e.packets]),
      [
        ["10.0.3.2:80", 0.5, 1],
        ["10.0.3.3:80", 0.5, 0],
      ],
    );
    const kinds = svc3.graph.nodes.map((n) => [n.kind, n.column]);
    assert.deepEqual(kinds, [
      ["service", 0],
      ["entry", 1],
      ["chain", 2],
      ["endpoint", 3],
      ["endpoint", 3],
    ]);
    const endpointNodes = svc3.graph.nodes.filter((n) => n.kind === "endpoint");
    assert.deepEqual(
      endpointNodes.map((n) => [
        n.label,
        n.detail.slice(0, 9),
        n.counterKey === svc3.endpoints.find((e) => e.endpoint === n.label)?.counterKey,
      ]),
      [
        ["10.0.3.2:80", "KUBE-SEP-", true],
        ["10.0.3.3:80", "KUBE-SEP-", true],
      ],
    );
    const ids = new Set(svc3.graph.nodes.map((n) => n.id));
    for (const e of svc3.graph.edges) assert.ok(ids.has(e.from) && ids.has(e.to), `${e.from} → ${e.to}`);
    assert.deepEqual(
      svc3.graph.edges.filter((e) => e.label.endsWith("%")).map((e) => e.label),
      ["50%", "50%"],
    );
    // The endpoint counter key names the DNAT rule of its KUBE-SEP chain.
    assert.match(svc3.endpoints[0]!.counterKey!, /^4\/nat\/KUBE-SEP-[A-Z0-9]+\/\d+$/);
    // The walk: the capture rule, then the KUBE-SVC chain, then each KUBE-SEP below it.
    assert.match(svc3.walk[0]!.text, /^nat KUBE-SERVICES rule \d+: .*ns3\/svc3:p80 cluster IP/);
    assert.equal(svc3.walk[0]!.depth, 0);
    assert.equal(svc3.walk[0]!.packets, 1);
    const dnats = svc3.walk.filter((w) => w.text.includes("DNAT"));
    assert.deepEqual(
      dnats.map((w) => [w.depth, w.counterKey]),
      svc3.endpoints.map((e) => [2, e.counterKey]),
    );
    // The same counters as parsing the whole dump.
    const whole = countersEvent(snapshotOf([dump], LOCAL, 0), undefined).counters;
    for (const w of svc3.walk)
      if (w.counterKey !== undefined)
        assert.deepEqual(whole[w.counterKey], [w.packets, (w as { bytes?: number }).bytes]);
    assert.equal((await getJson("/api/service", "service=4/ns3/nope")).status, 404);
    assert.equal((await getJson("/api/service", "service=<x>")).status, 400);
  });

  it("searches and pages the Services list on the server", async () => {
    const many = Array.from({ length: 120 }, (_, i) => `ns${i % 3}/svc-${String(i).padStart(3, "0")}`);
    const text = [
      "*nat",
      ":KUBE-SERVICES - [0:0]",
      ...many.map(
        (s, i) =>
          `-A KUBE-SERVICES -d 10.1.${i >> 8}.${i & 255}/32 -p tcp -m comment --comment "${s}:p80 cluster IP" -m tcp --dport 80 -j ACCEPT`,
      ),
      "COMMIT",
      "",
    ].join("\n");
    const handle = handlerFor(text);
    const get = async (query: string) =>
      JSON.parse(
        (await handle({ method: "GET", path: "/api/services", query: new URLSearchParams(query) })).body,
      ) as {
        total: number;
        page: number;
        pages: number;
        services: { service: string }[];
      };
    const first = await get("");
    assert.deepEqual([first.total, first.page, first.pages, first.services.length], [120, 1, 3, 50]);
    const sorted = [...many].sort();
    assert.deepEqual(
      first.services.map((s) => s.service),
      sorted.slice(0, 50),
    );
    const last = await get("page=9&limit=50");
    assert.deepEqual([last.page, last.services.length], [3, 20]);
    assert.deepEqual(
      last.services.map((s) => s.service),
      sorted.slice(100),
    );
    const byName = await get("q=SVC-07");
    assert.deepEqual(
      byName.services.map((s) => s.service).sort(),
      many.filter((s) => s.includes("svc-07")).sort(),
    );
    const byIp = await get("q=10.1.0.77:80");
    assert.deepEqual(
      byIp.services.map((s) => s.service),
      [many[77]],
    );
    const bad = await handle({ method: "GET", path: "/api/services", query: new URLSearchParams("page=0") });
    assert.equal(bad.status, 400);
  });

  it("serves the rules in -vnL columns and searches by IP, IP:port, port and text", async () => {
    const all = await getJson("/api/rules");
    const allRules = all.body["rules"] as Record<string, unknown>[];
    assert.equal(all.body["total"], allRules.length);
    assert.deepEqual(all.body["columns"], [
      "num",
      "pkts",
      "bytes",
      "target",
      "prot",
      "opt",
      "in",
      "out",
      "source",
      "destination",
      "extra",
    ]);
    const svc = allRules.find((r) => String(r["rule"]).includes("ns3/svc3:p80 cluster IP"))!;
    assert.deepEqual(
      [
        svc["table"],
        svc["chain"],
        svc["pkts"],
        svc["bytes"],
        svc["prot"],
        svc["opt"],
        svc["in"],
        svc["out"],
        svc["source"],
        svc["destination"],
      ],
      ["nat", "KUBE-SERVICES", "1", "60", "tcp", "--", "*", "*", "0.0.0.0/0", "172.30.0.43"],
    );
    assert.match(String(svc["extra"]), /^\/\* ns3\/svc3:p80 cluster IP \*\/ tcp dpt:80$/);
    assert.match(String(svc["target"]), /^KUBE-SVC-/);

    const byIp = (await getJson("/api/rules", "q=10.0.3.2")).body["rules"] as Record<string, unknown>[];
    assert.ok(byIp.length > 0);
    for (const r of byIp) assert.match(String(r["rule"]), /10\.0\.3\.2\b/);
    assert.ok(
      byIp.some((r) => r["target"] === "DNAT"),
      "the DNAT to the endpoint is found",
    );

    const byPort = (await getJson("/api/rules", "q=8443")).body["rules"] as Record<string, unknown>[];
    assert.deepEqual(
      byPort.map((r) => [r["table"], r["chain"]]),
      [["filter", "INPUT"]],
    );
    const byIpPort = (await getJson("/api/rules", "q=172.30.0.43:80")).body["rules"] as Record<
      string,
      unknown
    >[];
    assert.deepEqual(
      byIpPort.map((r) => String(r["chain"]).replace(/-[A-Z0-9]{16}$/, "-…")),
      ["KUBE-SERVICES", "KUBE-SVC-…"],
    );
    const byText = (await getJson("/api/rules", "q=SVC4")).body["rules"] as Record<string, unknown>[];
    assert.ok(byText.length > 0 && byText.every((r) => String(r["rule"]).toLowerCase().includes("svc4")));
    assert.deepEqual(parseRuleQuery(" "), { kind: "all" });
    assert.equal(parseRuleQuery("[fd00::1]:80").kind, "address");
  });

  it("traces through the same code path as the CLI (packetFromFlags → tracePacket → traceToJson)", async () => {
    const { status, body } = await getJson(
      "/api/trace",
      "src=10.0.1.5&dst=172.30.0.43:80&proto=tcp&from=pod",
    );
    assert.equal(status, 200);
    const { packet, origin } = packetFromFlags({
      src: "10.0.1.5",
      dst: "172.30.0.43:80",
      proto: "tcp",
      from: "pod",
    });
    const cli = traceToJson(tracePacket(parseIptablesSave(dump), packet, { localAddresses: LOCAL, origin }));
    assert.deepEqual(body, JSON.parse(safeJson(cli)));
    const outcomes = body["outcomes"] as { dnat?: string; probability: number }[];
    assert.deepEqual(
      outcomes.map((o) => [o.dnat, o.probability]),
      [
        ["10.0.3.2:80", 0.5],
        ["10.0.3.3:80", 0.5],
      ],
    );
  });

  it("answers bad trace input with 400 and the reason", async () => {
    const missing = await getJson("/api/trace", "src=10.0.1.5");
    assert.equal(missing.status, 400);
    assert.match(String(missing.body["error"]), /--dst/);
    const bad = await getJson("/api/trace", "src=nope&dst=172.30.0.43:80");
    assert.equal(bad.status, 400);
    assert.match(String(bad.body["error"]), /not an IP address/);
    const v6 = await getJson("/api/trace", "src=fd00::1&dst=[fd00::2]:80");
    assert.equal(v6.status, 400);
  });

  it("never lets markup from a rule through as markup: \\u-escaped in JSON, JSON content type, nosniff, strict CSP", async () => {
    const res = await handlerFor()({
      method: "GET",
      path: "/api/rules",
      query: new URLSearchParams("q=8443"),
    });
    assert.equal(res.headers["Content-Type"], "application/json; charset=utf-8");
    assert.equal(res.headers["X-Content-Type-Options"], "nosniff");
    assert.match(res.headers["Content-Security-Policy"] ?? "", /script-src 'self';/);
    assert.ok(!res.body.includes("<"), res.body);
    assert.ok(res.body.includes("\\u003cimg src=x onerror=alert(1)\\u003e"));
    const rows = (JSON.parse(res.body) as { rules: { extra: string }[] }).rules;
    assert.equal(rows[0]?.extra.includes(`/* ${HOSTILE} */`), true, "the client still gets the exact text");
    const page = await handlerFor()({ method: "GET", path: "/", query: new URLSearchParams() });
    assert.equal(page.status, 200);
    assert.match(page.body, /<script src="\/app.js" defer><\/script>/);
    assert.doesNotMatch(page.body, /<script>/, "no inline script (the CSP would block it)");
    const script = await handlerFor()({ method: "GET", path: "/app.js", query: new URLSearchParams() });
    assert.doesNotMatch(script.body, /innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(/);
  });

  it("has no write action: every method but GET is 405; unknown paths 404", async () => {
    const handle = handlerFor();
    for (const method of ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]) {
      for (const path of ["/", "/api/services", "/api/trace"]) {
        const res = await handle({ method, path, query: new URLSearchParams() });
        assert.equal(res.status, 405, `${method} ${path}`);
        assert.equal(res.headers["Allow"], "GET");
      }
    }
    assert.equal(
      (await handle({ method: "GET", path: "/api/nope", query: new URLSearchParams() })).status,
      404,
    );
  });

  it("reads the ruleset at most once per second, and retries after a failed read", async () => {
    const clock = new FakeClock(0);
    let fail = true;
    const source = staticSource(() => {
      if (fail) throw new Error("iptables-save failed");
      return [dump];
    });
    const cache = new SnapshotCache({ read: () => Promise.resolve().then(() => source.read()) }, clock);
    await assert.rejects(cache.get(), /iptables-save failed/);
    fail = false;
    const first = await cache.get();
    await Promise.all([cache.get(), cache.get(), cache.get()]);
    assert.equal(source.reads, 2);
    clock.advance(999);
    assert.equal(await cache.get(), first);
    clock.advance(1);
    await cache.get();
    assert.equal(source.reads, 3);
  });

  it("streams every counter first, then only those that moved, and all again after a rule change", () => {
    const moved = dump.replace("[1:60] -A KUBE-SERVICES", "[9:540] -A KUBE-SERVICES");
    const first = countersEvent(snapshotOf([dump], LOCAL, 0), undefined);
    assert.equal(first.full, true);
    assert.deepEqual(first.counters["4/nat/KUBE-SERVICES/2"], [1, 60]);
    const foreign = Object.entries(first.counters).find(([, [p, b]]) => p === 7 && b === 420)?.[0];
    assert.match(foreign ?? "", /^4\/filter\/INPUT\/\d+$/);
    const still = countersEvent(snapshotOf([dump], LOCAL, 1), first);
    assert.deepEqual(still, { version: first.version, takenAt: 1, full: false, counters: {} });
    const delta = countersEvent(snapshotOf([moved], LOCAL, 2), first);
    assert.deepEqual(delta.counters, { "4/nat/KUBE-SERVICES/1": [9, 540] });
    const changed = countersEvent(
      snapshotOf([dump.replace("--dport 8443", "--dport 8444")], LOCAL, 3),
      first,
    );
    assert.equal(changed.full, true);
    assert.equal(Object.keys(changed.counters).length, Object.keys(first.counters).length);
  });

  it("keeps the structure version when only counters change", () => {
    const a = snapshotOf([dump], LOCAL, 0);
    const b = snapshotOf([dump.replace("[1:60] -A KUBE-SERVICES", "[9:540] -A KUBE-SERVICES")], LOCAL, 0);
    const c = snapshotOf([dump.replace("--dport 8443", "--dport 8444")], LOCAL, 0);
    assert.equal(a.version, b.version);
    assert.notEqual(a.version, c.version);
  });

  it("binds 127.0.0.1 when the flag has no host; answers only IP-literal or localhost Host headers", () => {
    assert.deepEqual(webBindAddress(":8080"), { host: "127.0.0.1", port: 8080 });
    assert.deepEqual(webBindAddress("8080"), { host: "127.0.0.1", port: 8080 });
    assert.deepEqual(webBindAddress("0.0.0.0:9"), { host: "0.0.0.0", port: 9 });
    assert.deepEqual(webBindAddress("[::1]:9"), { host: "::1", port: 9 });
    assert.throws(() => webBindAddress("localhost"));
    for (const ok of ["127.0.0.1:8080", "localhost:1", "[::1]:80", "10.0.0.1"])
      assert.ok(allowedHost(ok), ok);
    for (const bad of [undefined, "evil.example:8080", "127.0.0.1.nip.io", ""])
      assert.ok(!allowedHost(bad), String(bad));
  });

  it("the iptables inspection source reads `<save> -c` through each family's Iptables and strips prefixes from the node's addresses", async () => {
    const calls: { argv: readonly string[]; netns: string | undefined }[] = [];
    const runner: Runner = {
      run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
        calls.push({ argv, netns: options.netns });
        const stdout =
          argv[0] === "ip"
            ? JSON.stringify([{ addr_info: [{ local: "10.1.2.3", prefixlen: 24 }] }])
            : `dump of ${argv[0]}`;
        return Promise.resolve({ argv, exitCode: 0, stdout, stderr: "", durationMs: 1 });
      },
    };
    for (const backend of ["nft", "legacy"] as const) {
      calls.length = 0;
      const read = await iptablesInspectionSource(
        runner,
        [
          new Iptables({ runner, family: "IPv4", backend, netns: "kpt-x" }),
          new Iptables({ runner, family: "IPv6", backend, netns: "kpt-x" }),
        ],
        "kpt-x",
      ).read();
      assert.deepEqual(read, {
        mode: "iptables",
        dumps: [`dump of iptables-${backend}-save`, `dump of ip6tables-${backend}-save`],
        localAddresses: ["10.1.2.3"],
      });
      assert.deepEqual(
        calls.map((c) => [c.argv.join(" "), c.netns]),
        [
          [`iptables-${backend}-save -c`, "kpt-x"],
          [`ip6tables-${backend}-save -c`, "kpt-x"],
          ["ip -j addr show", "kpt-x"],
        ],
      );
    }
  });
});

describe("web view server (loopback socket)", () => {
  it("streams counters as server-sent events and refuses foreign Host headers", async () => {
    let packets = 1;
    const source = staticSource(() => [
      dump.replace(
        "[1:60] -A KUBE-SERVICES -d 172.30.0.43",
        `[${packets}:60] -A KUBE-SERVICES -d 172.30.0.43`,
      ),
    ]);
    const listener = await serveWeb("127.0.0.1:0", {
      source,
      clock: {
        now: () => Date.now(),
        setTimer: (ms, fn) => {
          const t = setTimeout(fn, ms);
          return { stop: () => (clearTimeout(t), true) };
        },
      },
      eventIntervalMs: 50,
    });
    const base = `http://127.0.0.1:${listener.address.port}`;
    const abort = new AbortController();
    try {
      const res = await fetch(`${base}/api/events`, { signal: abort.signal });
      assert.equal(res.headers.get("content-type"), "text/event-stream; charset=utf-8");
      const reader = res.body!.getReader();
      const seen: number[] = [];
      let buffer = "";
      const deadline = Date.now() + 10_000;
      while (!seen.includes(5) && Date.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += Buffer.from(value).toString("utf8");
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = /^data: (.*)$/m.exec(event)?.[1];
          if (!event.startsWith("event: counters") || data === undefined) continue;
          const counters = (JSON.parse(data) as { counters: Record<string, [number, number]> }).counters;
          const watched = counters["4/nat/KUBE-SERVICES/2"];
          if (seen.length === 0) assert.ok(watched !== undefined, "the first event carries every counter");
          if (watched !== undefined) seen.push(watched[0]);
          packets = 5;
        }
      }
      assert.equal(seen[0], 1);
      assert.equal(seen.at(-1), 5, "the stream pushes the new counter");
      abort.abort();
      const foreign = await new Promise<number | undefined>((resolve, reject) => {
        const req = http.get(`${base}/api/services`, { headers: { Host: "evil.example" } }, (r) => {
          r.resume();
          resolve(r.statusCode);
        });
        req.on("error", reject);
      });
      assert.equal(foreign, 403);
      const post = await fetch(`${base}/api/services`, { method: "POST" });
      assert.equal(post.status, 405);
    } finally {
      abort.abort();
      await listener.close();
    }
  });
});

describe("web view server: an event-stream client that never reads", () => {
  it("queues nothing more for it, closes it after the stall bound, and keeps serving others", async () => {
    // 30,000 filter rules, one of them changing on every read (the server reads the kernel at
    // most once a second): one event a second carries every counter, ~1.5 MB. Buffered for a
    // client that never reads, that grows without bound once the socket buffers are full.
    let generation = 0;
    const rules = Array.from(
      { length: 30_000 },
      (_, i) => `[${i}:60] -A KUBE-FIREWALL -s 10.${i >> 16}.${(i >> 8) & 255}.${i & 255}/32 -j ACCEPT`,
    );
    const big = () => [
      `*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\n${rules.join("\n")}\n[0:0] -A INPUT -m comment --comment "gen-${generation++}" -j ACCEPT\nCOMMIT\n`,
    ];
    const listener = await serveWeb("127.0.0.1:0", {
      source: staticSource(big),
      clock: {
        now: () => Date.now(),
        setTimer: (ms, fn) => {
          const t = setTimeout(fn, ms);
          return { stop: () => (clearTimeout(t), true) };
        },
      },
      eventIntervalMs: 50,
      stalledStreamMs: 2_000,
    });
    const port = listener.address.port;
    const stuck = net.connect({ host: "127.0.0.1", port });
    try {
      await new Promise<void>((resolve, reject) => {
        stuck.once("connect", resolve);
        stuck.once("error", reject);
      });
      stuck.pause(); // never reads: the kernel buffers fill, then the server's
      stuck.write("GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
      // Meanwhile another client is served as usual.
      const res = await fetch(`http://127.0.0.1:${port}/api/services`);
      assert.equal(res.status, 200);
      await res.arrayBuffer();
      // Stuck for well over the stall bound; then read what the server had queued: a closed
      // stream ends once its queued bytes are read, an open one never does.
      await new Promise((resolve) => setTimeout(resolve, 10_000));
      let received = 0;
      const ended = new Promise<boolean>((resolve) => {
        stuck.on("data", (chunk: Buffer) => (received += chunk.length));
        stuck.once("end", () => resolve(true));
        setTimeout(() => resolve(false), 15_000).unref();
      });
      stuck.resume();
      assert.equal(await ended, true, "the server closed the stalled stream");
      assert.ok(received < 40 * 2 ** 20, `${received} bytes were queued for the stuck client`);
    } finally {
      stuck.destroy();
      await listener.close();
    }
  });
});
