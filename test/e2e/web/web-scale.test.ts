import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { iptablesInspectionSource } from "../../../src/backends/iptables/inspect.ts";
import { nftablesInspectionSource } from "../../../src/backends/nftables/inspect.ts";
import { detectBackend } from "../../../src/kernel/detect.ts";
import { ProcessRunner } from "../../../src/kernel/exec.ts";
import { Iptables } from "../../../src/kernel/iptables.ts";
import { realClock } from "../../../src/proxy/clock.ts";
import type { HttpListener } from "../../../src/server/httpserver.ts";
import { serveWeb } from "../../../src/server/web.ts";
import { names } from "../../../bench/synthetic.ts";
import { loadScaleRules, renderScaleRules, type ScaleMode } from "../../support/scale-node.ts";

/*
 * The web view in headless Chromium on a node namespace holding 10,000 Services x 10 endpoints
 * (KPT_WEB_SCALE_SERVICES=10000; the suite's default is 1,000, which fits CI's time budget)
 * (rendered and loaded as a full sync leaves them, without the daemon): the list pages, a search
 * finds one Service, and its page shows the walk through the mode's rules; in iptables mode the
 * walk's counters move when a connection to the Service's cluster IP leaves the node.
 */

const SERVICES = Number(process.env["KPT_WEB_SCALE_SERVICES"] ?? 1_000);
const ENDPOINTS = 10;
const CHROMIUM = "/usr/bin/chromium";
const WAIT_MS = 120_000;
const runner = new ProcessRunner();

for (const mode of ["iptables", "nftables"] as const satisfies readonly ScaleMode[]) {
  describe(
    `web view at ${SERVICES} Services in ${mode} mode (headless Chromium)`,
    { timeout: 900_000 },
    () => {
      const netns = `kpt-wscale-${randomBytes(4).toString("hex")}`;
      let created = false;
      let web: HttpListener | undefined;
      let browser: Browser | undefined;
      let page: Page;
      const pageErrors: string[] = [];
      const last = names(SERVICES - 1);
      const lastRef = `${last.namespace}/${last.name}`;

      before(async () => {
        const t0 = performance.now();
        await runner.run(["ip", "netns", "add", netns], { timeoutMs: 10_000 });
        created = true;
        await runner.run(["ip", "link", "set", "lo", "up"], { netns, timeoutMs: 10_000 });
        // A way out for connections to the cluster IPs: the OUTPUT hook sees (and counts) them.
        await runner.run(["ip", "link", "add", "out0", "type", "veth", "peer", "name", "out1"], {
          netns,
          timeoutMs: 10_000,
        });
        await runner.run(["ip", "link", "set", "out0", "up"], { netns, timeoutMs: 10_000 });
        await runner.run(["ip", "route", "add", "default", "dev", "out0"], { netns, timeoutMs: 10_000 });
        await loadScaleRules(runner, netns, renderScaleRules(mode, SERVICES, ENDPOINTS));
        process.stdout.write(
          `# ${mode}: ${SERVICES} Services rendered and loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
        );
        let source;
        if (mode === "iptables") {
          const { backend } = await detectBackend(runner, { netns });
          source = iptablesInspectionSource(
            runner,
            [new Iptables({ runner, family: "IPv4", backend, netns })],
            netns,
          );
        } else source = nftablesInspectionSource(runner, netns);
        web = await serveWeb("127.0.0.1:0", { source, clock: realClock });
        browser = await chromium.launch({
          executablePath: CHROMIUM,
          args: [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
          ],
        });
        page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
        page.on("pageerror", (e) => pageErrors.push(e.message));
        await page.goto(`http://127.0.0.1:${web.address.port}/`);
      });

      after(async () => {
        try {
          await browser?.close();
          await web?.close();
        } finally {
          if (created) await runner.run(["ip", "netns", "delete", netns], { timeoutMs: 30_000 });
        }
      });

      it("lists the Services a page at a time, paged on the server", async () => {
        const count = page.locator("#services-count");
        await page
          .locator("#services-list[data-page='1'] tr[data-list-service]")
          .first()
          .waitFor({ timeout: WAIT_MS });
        assert.equal(await count.textContent(), `${SERVICES} Services · page 1 of ${SERVICES / 50}`);
        assert.equal(await page.locator("tr[data-list-service]").count(), 50);
        const first = await page.locator("tr[data-list-service]").first().getAttribute("data-list-service");
        await page.click("#services-next");
        await page.locator("#services-list[data-page='2']").waitFor({ state: "attached", timeout: WAIT_MS });
        const second = await page.locator("tr[data-list-service]").first().getAttribute("data-list-service");
        assert.notEqual(second, first);
        assert.equal(await page.locator("tr[data-list-service]").count(), 50);
      });

      it("finds one Service by name and opens its page with the walk", async () => {
        await page.fill("#services-form input[name=q]", lastRef);
        await page.click("#services-form button[type=submit]");
        await page
          .locator(`#services-list[data-query="${lastRef}"]`)
          .waitFor({ state: "attached", timeout: WAIT_MS });
        const rows = page.locator("tr[data-list-service]");
        assert.deepEqual(await rows.evaluateAll((rs) => rs.map((r) => r.getAttribute("data-list-service"))), [
          lastRef,
        ]);
        await rows.first().locator("a").click();
        const section = page.locator(`#service [data-service="${lastRef}"]`);
        await section.waitFor({ timeout: WAIT_MS });
        assert.equal(await section.locator("tr[data-endpoint]").count(), ENDPOINTS);
        const walk = await section
          .locator("table.walk tr[data-walk]")
          .evaluateAll((rs) =>
            rs.map((r) => [Number(r.getAttribute("data-walk")), r.children[2]?.textContent ?? ""]),
          );
        const dnat = mode === "iptables" ? /-j DNAT --to-destination/ : /dnat to/;
        assert.equal(
          walk.filter(([, text]) => dnat.test(String(text))).length,
          ENDPOINTS,
          JSON.stringify(walk),
        );
        assert.ok(walk.every(([depth]) => Number.isInteger(depth)));
        const entry =
          mode === "iptables" ? /^nat KUBE-SERVICES rule \d+: .*cluster IP/ : /^services rule \d+: /;
        assert.match(String(walk[0]?.[1]), entry);
      });

      it(
        mode === "iptables"
          ? "shows the walk's counters moving with traffic"
          : "shows the walk's rules (nftables mode's rules carry no counters)",
        async () => {
          const section = page.locator(`#service [data-service="${lastRef}"]`);
          if (mode === "nftables") {
            assert.equal((await section.locator("table.walk td.pkts[data-key]").count()) > 0, true);
            assert.deepEqual(pageErrors, []);
            return;
          }
          const packets = async (): Promise<number> =>
            (await section.locator("table.walk tr[data-walk='0'] td.pkts").allTextContents()).reduce(
              (a, t) => a + Number(t || 0),
              0,
            );
          const before = await packets();
          const frontends = await page.evaluate(async (ref) => {
            const res = await fetch("/api/services?" + new URLSearchParams({ q: ref }));
            return (
              ((await res.json()) as { services: { frontends: string[] }[] }).services[0]?.frontends ?? []
            );
          }, lastRef);
          const cluster = frontends.find((f) => /^\d+\.\d+\.\d+\.\d+:\d+\/tcp$/.test(f));
          assert.ok(cluster !== undefined, frontends.join(", "));
          const [addr] = cluster.split("/");
          // One SYN through nat OUTPUT: the capture rule and one endpoint's DNAT count it.
          await runner.run(["curl", "-s", "--max-time", "1", `http://${addr}/`], {
            netns,
            okExitCodes: [7, 28],
            timeoutMs: 10_000,
          });
          const deadline = Date.now() + WAIT_MS;
          let now = before;
          while (now <= before && Date.now() < deadline) {
            await page.waitForTimeout(500);
            now = await packets();
          }
          assert.ok(now > before, `capture rule packets ${before} → ${now}`);
          assert.deepEqual(pageErrors, []);
        },
      );
    },
  );
}
