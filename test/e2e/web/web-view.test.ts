import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Page } from "playwright-core";
import { detectBackend } from "../../../src/kernel/detect.ts";
import { ProcessRunner } from "../../../src/kernel/exec.ts";
import { Iptables } from "../../../src/kernel/iptables.ts";
import { readNftGeneration } from "../../../src/kernel/nft-generation.ts";
import { formatPercent } from "../../../src/netfilter/tracer.ts";
import type { TraceOutcome } from "../../../src/netfilter/tracer.ts";
import { realClock } from "../../../src/proxy/clock.ts";
import { probeHttp } from "../../../src/sandbox/client.ts";
import { buildSeedTopology, SEED, seedManifests, seedPod } from "../../../src/sandbox/seed.ts";
import { Sandbox } from "../../../src/sandbox/topology.ts";
import type { HttpListener } from "../../../src/server/httpserver.ts";
import { serveWeb } from "../../../src/server/web.ts";
import { iptablesInspectionSource } from "../../../src/backends/iptables/inspect.ts";
import { daemonArgv, ProxyDaemon, waitFor } from "../../support/daemon.ts";

/*
 * The web view in real headless Chromium. The daemon programs the seed's nginx Service inside a
 * sandbox node namespace; the view runs in this process on 127.0.0.1 of the root namespace (where
 * the browser is) and reads the node namespace's ruleset, so nothing in the root namespace changes.
 */

const NODE = SEED.node.name;
const SERVICE = `${SEED.namespace}/${SEED.service}`;
const HOSTILE = "<img src=x onerror=alert(1)>";
const ARTIFACTS = fileURLToPath(new URL("./artifacts/", import.meta.url));
const CHROMIUM = "/usr/bin/chromium";
const WAIT_MS = 15_000;
const DAEMON_WEB_PORT = 10260;

describe("web view in headless Chromium", { timeout: 150_000 }, () => {
  let sandbox: Sandbox;
  let daemon: ProxyDaemon | undefined;
  let web: HttpListener | undefined;
  let browser: Browser | undefined;
  let page: Page;
  const dialogs: string[] = [];
  const pageErrors: string[] = [];

  before(async () => {
    sandbox = await Sandbox.create({ prefix: "kptweb" });
    await buildSeedTopology(sandbox, { pods: 2 });
    daemon = await ProxyDaemon.start(sandbox, {
      node: NODE,
      manifests: seedManifests([seedPod(0), seedPod(1)]),
      args: ["--cluster-cidr", "10.244.0.0/16", "--web-bind-address", `:${DAEMON_WEB_PORT}`],
      // tsx start-up inside the namespace is slow on a busy 2-core box.
      startTimeoutMs: 60_000,
    });
    // A foreign rule, as any root user on the node could add: its comment is markup.
    await sandbox.exec(NODE, [
      "iptables",
      "-A",
      "INPUT",
      "-s",
      "10.66.0.1/32",
      "-p",
      "tcp",
      "--dport",
      "8443",
      "-m",
      "comment",
      "--comment",
      HOSTILE,
      "-j",
      "ACCEPT",
    ]);
    // Read where the daemon writes: the backend it detects in the node namespace.
    const runner = new ProcessRunner();
    const netns = sandbox.netnsOf(NODE);
    const { backend } = await detectBackend(runner, { netns });
    // Kept as the daemon keeps it: while the generation (iptables-nft) stays, at most 5 s, so
    // the counters below still rise within WAIT_MS.
    const source = iptablesInspectionSource(
      runner,
      [new Iptables({ runner, family: "IPv4", backend, netns })],
      netns,
      {
        clock: realClock,
        ...(backend === "nft" ? { generation: () => readNftGeneration(netns) } : {}),
      },
    );
    web = await serveWeb("127.0.0.1:0", { source, clock: realClock });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on("dialog", (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    page.on("pageerror", (e) => pageErrors.push(e.message));
    // The list is paged on the server; the Service's own page has its graph, endpoints and walk.
    await page.goto(`http://127.0.0.1:${web.address.port}/#service/4/${SERVICE}`);
  });

  after(async () => {
    try {
      await browser?.close();
      await web?.close();
      await daemon?.dispose();
    } finally {
      await sandbox.dispose();
    }
  });

  /** Packets counted by the DNAT rule of each endpoint, as the page shows them. */
  async function shownPackets(): Promise<Record<string, number>> {
    return page.$$eval(`[data-service="${SERVICE}"] tr[data-endpoint]`, (rows) =>
      Object.fromEntries(
        rows.map((r) => [r.getAttribute("data-endpoint"), Number(r.querySelector("td.pkts")?.textContent)]),
      ),
    );
  }

  /** Runs a rules search from the form and waits until the table shows its result. */
  async function search(q: string): Promise<void> {
    await page.fill("#search-form input[name=q]", q);
    await page.click("#search-form button");
    await page.locator(`#rules[data-query="${q}"]`).waitFor({ state: "attached", timeout: WAIT_MS });
  }

  it("shows the seed's nginx Service with both endpoints, in the table and the SVG graph", async () => {
    const section = page.locator(`[data-service="${SERVICE}"]`);
    await section.waitFor({ timeout: WAIT_MS });
    assert.equal(await section.locator("h3").evaluate((h) => h.firstChild?.textContent), SERVICE);
    const endpoints = await section
      .locator("tr[data-endpoint]")
      .evaluateAll((rows) => rows.map((r) => [r.getAttribute("data-endpoint"), r.children[1]?.textContent]));
    assert.deepEqual(endpoints.sort(), [
      ["10.244.0.10:80", "50%"],
      ["10.244.0.9:80", "50%"],
    ]);
    const graphEndpoints = await section
      .locator('svg g[data-node="endpoint"] text.label')
      .evaluateAll((ts) => ts.map((t) => t.textContent).sort());
    assert.deepEqual(graphEndpoints, ["10.244.0.10:80", "10.244.0.9:80"]);
    const chains = await section
      .locator('svg g[data-node="chain"] text.label')
      .evaluateAll((ts) => ts.map((t) => (t.textContent ?? "").replace(/-[A-Z0-9]{16}$/, "")).sort());
    assert.deepEqual(chains, ["KUBE-EXT", "KUBE-SVC"]);
  });

  it("shows the counters rising, over the event stream, when traffic flows", async () => {
    await page.waitForSelector("#status[data-updates]", { timeout: WAIT_MS });
    const before = await shownPackets();
    const report = await probeHttp(sandbox, seedPod(0).name, {
      host: SEED.clusterIP,
      port: SEED.port,
      count: 20,
    });
    assert.deepEqual(report.errors, {}, JSON.stringify(report.results.slice(0, 3)));
    const total = (counts: Record<string, number>): number =>
      Object.values(counts).reduce((a, b) => a + b, 0);
    // No reload: only the event stream can change what the page shows.
    const afterTraffic = await waitFor(
      "the page to show the new packets",
      async () => {
        const shown = await shownPackets();
        return total(shown) >= total(before) + 20 ? shown : undefined;
      },
      WAIT_MS,
    );
    assert.ok(total(afterTraffic) >= total(before) + 20, JSON.stringify({ before, afterTraffic }));
    const graphCounts = await page
      .locator(`[data-service="${SERVICE}"] svg text.count`)
      .evaluateAll((ts) => ts.map((t) => t.textContent));
    assert.ok(
      graphCounts.some((c) => /^[1-9]\d* pkts$/.test(c ?? "")),
      `graph counters: ${graphCounts.join(", ")}`,
    );
  });

  it("searches rules by IP and shows a hostile foreign comment as text, never as markup", async () => {
    await search("10.66.0.1");
    assert.equal(await page.locator("#rules-count").textContent(), "1 rule");
    const extra = await page.locator("#rules td.extra").first().textContent();
    assert.ok(extra?.includes(`/* ${HOSTILE} */`), extra ?? "");
    assert.equal(await page.locator("img").count(), 0, "the comment did not become an <img>");
    assert.deepEqual(dialogs, []);
    await search(String(SEED.nodePort));
    const chainsForPort = await page.locator("#rules tr[data-key] td:nth-child(3)").allTextContents();
    assert.ok(chainsForPort.includes("KUBE-NODEPORTS"), chainsForPort.join(", "));
  });

  it("traces from the form exactly what `kube-proxy-ts trace` prints on the node", async () => {
    await page.fill("#trace-form input[name=src]", seedPod(0).ipv4);
    await page.fill("#trace-form input[name=dst]", `${SEED.clusterIP}:${SEED.port}`);
    await page.click("#trace-form button");
    await page.waitForSelector("#trace tr.outcome", { timeout: WAIT_MS });
    const shown = await page
      .locator("#trace tr.outcome")
      .evaluateAll((rows) => rows.map((r) => [...r.children].map((td) => td.textContent ?? "")));

    // The real CLI, run where a user would run it: on the node, against its live kernel.
    const { stdout } = await sandbox.exec(
      NODE,
      [
        ...daemonArgv(),
        "trace",
        "--src",
        seedPod(0).ipv4,
        "--dst",
        `${SEED.clusterIP}:${SEED.port}`,
        "--proto",
        "tcp",
        "--from",
        "pod",
        "-o",
        "json",
      ],
      { timeoutMs: 60_000 },
    );
    const cli = JSON.parse(stdout) as { outcomes: TraceOutcome[] };
    assert.deepEqual(
      shown.map((cells) => [cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]]),
      cli.outcomes.map((o) => [
        formatPercent(o.probability),
        o.verdict,
        o.dnat ?? "—",
        o.destination,
        o.delivery,
        o.verdict === "ACCEPT" ? (o.masquerade ? "yes" : "no") : "",
      ]),
    );
    assert.deepEqual(shown.map((cells) => cells[3]).sort(), ["10.244.0.10:80", "10.244.0.9:80"]);
  });

  it("is served by the daemon itself with --web-bind-address (127.0.0.1 when no host), GET only", async () => {
    const curl = async (...args: string[]): Promise<string> =>
      (
        await sandbox.exec(NODE, ["curl", "-sS", "--max-time", "5", ...args], {
          timeoutMs: 10_000,
        })
      ).stdout;
    const services = JSON.parse(await curl(`http://127.0.0.1:${DAEMON_WEB_PORT}/api/services`)) as {
      services: { service: string }[];
    };
    assert.ok(services.services.some((s) => s.service === SERVICE));
    const nginx = JSON.parse(
      await curl(`http://127.0.0.1:${DAEMON_WEB_PORT}/api/service?service=4/${SERVICE}`),
    ) as { endpoints: { endpoint: string }[] };
    assert.deepEqual(nginx.endpoints.map((e) => e.endpoint).sort(), ["10.244.0.10:80", "10.244.0.9:80"]);
    const post = await curl(
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-X",
      "POST",
      `http://127.0.0.1:${DAEMON_WEB_PORT}/api/services`,
    );
    assert.equal(post, "405");
    const listening = await curl(
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      `http://${SEED.node.ipv4}:${DAEMON_WEB_PORT}/`,
    ).catch((err: unknown) => String(err));
    assert.match(
      listening,
      /Failed to connect|Couldn't connect|000/,
      "not reachable on the node's LAN address",
    );
  });

  it("takes a screenshot of the page", async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    await search(SEED.clusterIP);
    const path = `${ARTIFACTS}web-view.png`;
    await page.screenshot({ path, fullPage: true });
    process.stdout.write(`# web view screenshot: ${path}\n`);
    assert.deepEqual(pageErrors, []);
  });
});
