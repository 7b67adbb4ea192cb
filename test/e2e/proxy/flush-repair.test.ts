import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WEB, webManifests, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { waitFor } from "../../support/daemon.ts";
import { TRAFFIC_MODES } from "../../support/service-matrix.ts";

/*
 * Someone removes the proxy's rules under the running daemon while nothing changes in the
 * cluster. iptables mode: one table's chains flushed and deleted (`iptables -t nat -F; iptables
 * -t nat -X`, as a hand-run cleanup or another tool does); the canary monitor polls every table
 * at the sync period and a full sync puts everything back, jump rules included. nftables mode:
 * our table deleted (`nft delete table ip kube-proxy`, or a `flush ruleset`); the monitor lists
 * the tables at the sync period and a full sync rebuilds it. In both a Service answers again.
 */

const NODE = WEB.node;
const SYNC_PERIOD_MS = 3_000;
/** After the period: the canary wait (500 ms, when other tables' canaries stay) and a full sync. */
const REPAIR_MARGIN_MS = 2_000;

for (const mode of TRAFFIC_MODES)
  describe(`an external flush of the proxy's rules is repaired within one sync period (${mode} mode)`, () => {
    const env = withDaemonSandbox({
      prefix: "kptpxflush",
      mode,
      daemon: {
        args: ["--iptables-sync-period", `${SYNC_PERIOD_MS / 1000}s`],
        manifests: webManifests(),
      },
    });

    const served = (count: number) => env.served(count);

    /** Removes the rules (`remove`), then waits for the daemon's repair; the time it took. */
    async function removeAndAwaitRepair(
      what: string,
      remove: () => Promise<void>,
      removed: () => Promise<boolean>,
      repaired: () => Promise<boolean>,
    ): Promise<number> {
      assert.ok(await repaired(), `the check holds before ${what}`);
      await remove();
      const removedAt = Date.now();
      assert.ok(await removed(), `${what} removed the rules`);
      await waitFor(
        `the daemon to repair ${what}`,
        async () => ((await repaired()) ? true : undefined),
        SYNC_PERIOD_MS + REPAIR_MARGIN_MS,
        () => env.daemon.logTail(),
      );
      return Date.now() - removedAt;
    }

    if (mode === "iptables") {
      const save = () => env.daemon.save("IPv4");
      /** Flushes and deletes `table`'s chains in the node, then waits for the daemon's repair. */
      const flushAndAwaitRepair = async (table: "nat" | "filter", repaired: (save: string) => boolean) => {
        const elapsedMs = await removeAndAwaitRepair(
          `a flush of ${table}`,
          async () => {
            await env.sandbox.exec(NODE, ["iptables", "-t", table, "-F"]);
            await env.sandbox.exec(NODE, ["iptables", "-t", table, "-X"]);
          },
          async () => !/KUBE-/.test(await env.daemon.save("IPv4", table)),
          async () => repaired(await save()),
        );
        assert.ok(
          /:KUBE-PROXY-CANARY/.test((await save()).split(`*${table}`)[1] ?? ""),
          "the canary is back",
        );
        return elapsedMs;
      };

      it("nat: chains, capture rules and jump rules come back, and the Service answers again", async (t) => {
        assert.deepEqual((await served(3)).errors, {}, "the Service answers before the flush");
        const elapsedMs = await flushAndAwaitRepair(
          "nat",
          (save) =>
            /^-A PREROUTING .*-j KUBE-SERVICES$/m.test(save) &&
            /^-A OUTPUT .*-j KUBE-SERVICES$/m.test(save) &&
            /^-A POSTROUTING .*-j KUBE-POSTROUTING$/m.test(save) &&
            new RegExp(`^-A KUBE-SERVICES -d ${WEB.vip}/32 .*-j KUBE-SVC-`, "m").test(save) &&
            /-j DNAT --to-destination 10\.244\.0\.31:80$/m.test(save),
        );
        const report = await served(5);
        assert.deepEqual(report.errors, {}, `${JSON.stringify(report.results)}${env.daemon.logTail(15)}`);
        t.diagnostic(`repaired ${elapsedMs} ms after the flush (sync period ${SYNC_PERIOD_MS} ms)`);
      });

      it("filter: the kube chains and their jump rules come back", async (t) => {
        const elapsedMs = await flushAndAwaitRepair(
          "filter",
          (save) =>
            /^-A INPUT .*-j KUBE-FIREWALL$/m.test(save) &&
            /^-A FORWARD .*-j KUBE-FORWARD$/m.test(save) &&
            /^-A KUBE-FORWARD .*-j ACCEPT$/m.test(save),
        );
        assert.deepEqual((await served(3)).errors, {});
        t.diagnostic(`repaired ${elapsedMs} ms after the flush (sync period ${SYNC_PERIOD_MS} ms)`);
      });
    } else {
      const table = async (): Promise<string> =>
        (await env.sandbox.exec(NODE, ["nft", "list", "table", "ip", "kube-proxy"], { okExitCodes: [0, 1] }))
          .stdout;
      const complete = (listing: string): boolean =>
        /chain nat-prerouting \{[^}]*jump services/.test(listing) &&
        /chain nat-postrouting \{[^}]*jump masquerading/.test(listing) &&
        new RegExp(`${WEB.vip.replaceAll(".", "\\.")} \\. tcp \\. 80 : goto service-`).test(listing) &&
        /dnat to 10\.244\.0\.31:80/.test(listing);

      it(
        "the table deleted: rebuilt within a sync period with no change in the cluster, and the Service answers again " +
          "(upstream's nftables mode has no monitor: it rebuilds at its next sync, after the next change or the hourly full sync)",
        async (t) => {
          assert.deepEqual((await served(3)).errors, {}, "the Service answers before the deletion");
          const elapsedMs = await removeAndAwaitRepair(
            "the deletion of table ip kube-proxy",
            async () => {
              await env.sandbox.exec(NODE, ["nft", "delete", "table", "ip", "kube-proxy"]);
            },
            async () => (await table()) === "",
            async () => complete(await table()),
          );
          const report = await served(5);
          assert.deepEqual(report.errors, {}, `${JSON.stringify(report.results)}${env.daemon.logTail(15)}`);
          t.diagnostic(`rebuilt ${elapsedMs} ms after the deletion (sync period ${SYNC_PERIOD_MS} ms)`);
        },
      );
    }
  });
