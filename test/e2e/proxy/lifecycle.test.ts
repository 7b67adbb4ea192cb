import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { nodeManifest, WEB, webObjects, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { endpointSlice, service, sleep, waitFor } from "../../support/daemon.ts";
import type { Family } from "../../support/daemon.ts";
import { TRAFFIC_MODES } from "../../support/service-matrix.ts";
import { startEchoServer, TrafficClient } from "../../support/traffic.ts";

/*
 * The daemon's life in a namespace that other components also program: their rules survive
 * every sync, a restart keeps established connections and serves new ones throughout, and
 * `--cleanup` gives the namespace back as it was. The cases run in order on one daemon, once in
 * iptables mode and once in nftables mode. Where nftables mode differs it is by design: it writes
 * no iptables rules (the built-in chains keep only the foreign jumps) and it keeps its own tables
 * at start-up instead of removing them; its table deleted is rebuilt by the monitor.
 */

const NODE = WEB.node;
const CLIENT = WEB.client;
const VIP = WEB.vip;
const ECHO_PORT = 9000;

/** What "another component" (a CNI plugin, a host firewall) keeps in the same tables. */
const FOREIGN_RULES = [
  "*nat",
  ":FOREIGN-NAT - [0:0]",
  "-A POSTROUTING -s 10.99.0.0/16 -j FOREIGN-NAT",
  "-A FOREIGN-NAT -d 198.51.100.1/32 -j RETURN",
  "-A FOREIGN-NAT -j MASQUERADE",
  "COMMIT",
  "*filter",
  ":FOREIGN-FILTER - [0:0]",
  '-A INPUT -p tcp -m tcp --dport 9999 -m comment --comment "another component" -j FOREIGN-FILTER',
  "-A FOREIGN-FILTER -s 192.0.2.0/24 -j DROP",
  "-A FOREIGN-FILTER -j ACCEPT",
  "-A FORWARD -d 203.0.113.7/32 -j DROP",
  "COMMIT",
  "",
].join("\n");

const saveTool = (family: Family): string => (family === "IPv4" ? "iptables-save" : "ip6tables-save");

const BUILTIN_CHAINS = new Set(["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]);

/**
 * An iptables-save dump reduced to what it means: no comments or counters, and no table that
 * holds nothing but empty built-in chains with ACCEPT policy (iptables-nft lists a table as
 * soon as anything touched it, even after everything in it was removed).
 */
function normaliseSave(save: string, keep: (line: string) => boolean = () => true): string[] {
  const out: string[] = [];
  let table: string[] = [];
  for (const raw of save.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("*")) {
      table = [line];
      continue;
    }
    if (line === "COMMIT") {
      const meaningful = table.slice(1).some((entry) => {
        const builtinAccept = /^:(\S+) ACCEPT$/.exec(entry);
        return builtinAccept === null || !BUILTIN_CHAINS.has(builtinAccept[1] ?? "");
      });
      if (meaningful) out.push(...table, "COMMIT");
      table = [];
      continue;
    }
    const entry = line.replace(/ \[\d+:\d+\]$/, "");
    if (keep(entry)) table.push(entry);
  }
  return out;
}

/** Only the lines that belong to someone else: anything that names no KUBE- chain. */
function foreignLines(save: string): string[] {
  return normaliseSave(save, (line) => !/KUBE-/.test(line));
}

/** Jump targets of each built-in chain, in order, per table: "filter INPUT" → [targets]. */
function builtinJumps(save: string): Record<string, string[]> {
  const jumps: Record<string, string[]> = {};
  let table = "";
  for (const line of save.split("\n")) {
    if (line.startsWith("*")) table = line.slice(1);
    const rule = /^-A (\S+) .*-j (\S+)/.exec(line);
    if (rule === null || !BUILTIN_CHAINS.has(rule[1] ?? "")) continue;
    (jumps[`${table} ${rule[1]}`] ??= []).push(rule[2] ?? "");
  }
  return jumps;
}

/*
 * docs/iptables.md §2.3: kube-proxy prepends its jumps (only when missing), so they end up in reverse
 * insertion order, ahead of whatever was there before.
 */
const EXPECTED_JUMPS = {
  "filter INPUT": [
    "KUBE-FIREWALL",
    "KUBE-PROXY-FIREWALL",
    "KUBE-NODEPORTS",
    "KUBE-EXTERNAL-SERVICES",
    "FOREIGN-FILTER",
  ],
  "filter FORWARD": [
    "KUBE-PROXY-FIREWALL",
    "KUBE-FORWARD",
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "DROP",
  ],
  "filter OUTPUT": ["KUBE-FIREWALL", "KUBE-PROXY-FIREWALL", "KUBE-SERVICES"],
  "nat PREROUTING": ["KUBE-SERVICES"],
  "nat OUTPUT": ["KUBE-SERVICES"],
  "nat POSTROUTING": ["KUBE-POSTROUTING", "FOREIGN-NAT"],
};

/** The jumps of another component only (nftables mode writes no iptables rules). */
function foreignJumps(jumps: Record<string, string[]>): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [chain, targets] of Object.entries(jumps)) {
    const foreign = targets.filter((t) => !t.startsWith("KUBE-"));
    if (foreign.length > 0) out[chain] = foreign;
  }
  return out;
}

const NFT_LEFTOVERS = [
  'add table ip kube-proxy { comment "rules for kube-proxy" ; }',
  "add chain ip kube-proxy services",
  'add table ip6 kube-proxy { comment "rules for kube-proxy" ; }',
  "add table inet foreign-fw",
  "add chain inet foreign-fw input { type filter hook input priority 10 ; }",
  "add table ip kube-proxy-not-ours",
  "",
].join("\n");

for (const mode of TRAFFIC_MODES)
  describe(`the daemon among other components' rules, across restarts and cleanup (${mode} mode)`, () => {
    const beforeProxy = new Map<Family, string>();
    const env = withDaemonSandbox({
      prefix: "kptpxlife",
      mode,
      podServer: { udpPort: null, readyTimeoutMs: 30_000 },
      onPod: (box, pod) => startEchoServer(box, pod, ECHO_PORT),
      async prepare(sandbox) {
        await sandbox.exec(NODE, ["iptables-restore", "--noflush"], { stdin: FOREIGN_RULES });
        await sandbox.exec(NODE, ["ip6tables-restore", "--noflush"], {
          stdin: FOREIGN_RULES.replace(
            /198\.51\.100\.1\/32|192\.0\.2\.0\/24|203\.0\.113\.7\/32|10\.99\.0\.0\/16/g,
            "2001:db8::/64",
          ),
        });
        for (const family of ["IPv4", "IPv6"] as const)
          beforeProxy.set(family, (await sandbox.exec(NODE, [saveTool(family)])).stdout);
        // What nftables mode would have left behind, next to a table of someone else's.
        await sandbox.exec(NODE, ["nft", "-f", "-"], { stdin: NFT_LEFTOVERS });
      },
      daemon: () => ({
        families: ["IPv4", "IPv6"],
        // The monitor polls every sync period (docs/iptables.md §2.4).
        args: ["--iptables-sync-period", "1s"],
        manifests: {
          ...nodeManifest(),
          "web.yaml": webObjects("web", VIP, [
            { name: "http", port: 80, nodePort: 30080 },
            { name: "echo", port: ECHO_PORT, nodePort: 30090 },
          ]),
        },
      }),
    });

    const saveAll = async (family: Family): Promise<string> =>
      (await env.sandbox.exec(NODE, [saveTool(family)])).stdout;
    const nft = async (...args: string[]) =>
      (await env.sandbox.exec(NODE, ["nft", ...args], { okExitCodes: [0, 1] })).stdout;
    /** What the mode programs: the nat table, or nftables mode's IPv4 table. */
    const ours = async (): Promise<string> =>
      mode === "iptables" ? env.daemon.save("IPv4", "nat") : nft("list", "table", "ip", "kube-proxy");
    /** The jumps from the built-in chains after a sync: the proxy's and the foreign ones, or only those. */
    const expectedJumps = (): Record<string, string[]> =>
      mode === "iptables" ? EXPECTED_JUMPS : foreignJumps(EXPECTED_JUMPS);
    const BASE_CHAINS = ["nat-prerouting", "nat-output", "nat-postrouting", "filter-input", "filter-forward"];
    const baseChains = async (): Promise<string[]> =>
      Promise.all(BASE_CHAINS.map((chain) => nft("list", "chain", "ip", "kube-proxy", chain)));

    it("keeps foreign chains and rules in nat and filter through every sync", async () => {
      const expected = foreignLines(beforeProxy.get("IPv4") ?? "");
      assert.ok(
        expected.includes(":FOREIGN-NAT -") && expected.includes(":FOREIGN-FILTER -"),
        expected.join("\n"),
      );
      const check = async (when: string): Promise<void> => {
        const now = await env.daemon.save("IPv4");
        assert.match(
          await ours(),
          mode === "iptables" ? /:KUBE-SERVICES/ : /default\/web\/tcp\/http/,
          `no proxy rules ${when}`,
        );
        assert.deepEqual(
          foreignLines(now),
          expected,
          `foreign rules changed ${when}${env.daemon.logTail(10)}`,
        );
        assert.deepEqual(
          foreignLines(await env.daemon.save("IPv6")),
          foreignLines(beforeProxy.get("IPv6") ?? ""),
        );
      };
      await check("after the first sync");
      assert.deepEqual(builtinJumps(await env.daemon.save("IPv4")), expectedJumps());
      const extra = service({
        name: "extra",
        type: "NodePort",
        clusterIP: "10.1.0.81",
        ports: [{ port: 80, nodePort: 30081 }],
      });
      const daemon = env.daemon;
      await daemon.apply(() => daemon.write("extra.yaml", extra));
      await check("after adding a Service");
      await daemon.apply(() =>
        daemon.write("extra.yaml", [
          extra,
          endpointSlice({
            service: "extra",
            endpoints: [{ ip: WEB.pods["web-a"], node: NODE }],
            ports: [{ port: 80 }],
          }),
        ]),
      );
      await check("after adding endpoints");
      await daemon.apply(() => daemon.remove("extra.yaml"));
      // nftables mode (as upstream) flushes a deleted Service's chains at once and deletes them at
      // a later sync, a second at least after nothing points at them any more.
      const inUse = (rules: string) =>
        mode === "iptables" ? rules : rules.replace(/chain \S+ \{\s*\}/g, "");
      await waitFor(
        mode === "iptables"
          ? "the extra Service's chains to be deleted"
          : "the extra Service's chains to be flushed",
        async () => (!inUse(await ours()).includes("default/extra") ? true : undefined),
        15_000,
        () => daemon.logTail(),
      );
      await check("after deleting a Service");
    });

    it("keeps established connections and serves new ones while the proxy restarts", async () => {
      const { sandbox, daemon } = env;
      const baseBefore = mode === "nftables" ? await baseChains() : [];
      const held = await TrafficClient.start(sandbox, CLIENT, "hold", {
        host: VIP,
        port: ECHO_PORT,
        intervalMs: 50,
        timeoutMs: 3_000,
      });
      const fresh = await TrafficClient.start(sandbox, CLIENT, "load", {
        host: VIP,
        port: 80,
        intervalMs: 20,
        timeoutMs: 3_000,
      });
      let heldSummary;
      let freshSummary;
      try {
        await sleep(500);
        await daemon.restart();
        await sleep(1_000);
        assert.ok(held.running && fresh.running);
      } finally {
        heldSummary = await held.stop();
        freshSummary = await fresh.stop();
      }
      assert.deepEqual(
        heldSummary.failures,
        [],
        `long-lived connection broke: ${JSON.stringify(heldSummary)}${daemon.logTail(15)}`,
      );
      assert.deepEqual(
        freshSummary.failures,
        [],
        `new connections failed: ${JSON.stringify(freshSummary)}${daemon.logTail(15)}`,
      );
      assert.equal(Object.keys(heldSummary.byPod).length, 1, "one connection, one pod");
      assert.ok(
        heldSummary.answers >= 10 && freshSummary.answers >= 10,
        JSON.stringify({ heldSummary, freshSummary }),
      );
      const now = await daemon.save("IPv4");
      assert.deepEqual(foreignLines(now), foreignLines(beforeProxy.get("IPv4") ?? ""));
      assert.deepEqual(
        builtinJumps(now),
        expectedJumps(),
        "a restart must not duplicate or reorder the jumps",
      );
      if (mode === "nftables")
        assert.deepEqual(
          await baseChains(),
          baseBefore,
          "a restart must not duplicate the base chains' rules",
        );
    });

    if (mode === "iptables")
      it("restores its rules with a full sync when someone removes them and the canary", async () => {
        const { sandbox, daemon } = env;
        const prerouting = [
          "-m",
          "comment",
          "--comment",
          "kubernetes service portals",
          "-j",
          "KUBE-SERVICES",
        ];
        await sandbox.exec(NODE, ["iptables", "-t", "nat", "-D", "PREROUTING", ...prerouting]);
        await sandbox.exec(NODE, ["iptables", "-t", "nat", "-F", "KUBE-SERVICES"]);
        assert.equal(
          (await env.served(1, VIP, { timeoutMs: 1_000 })).results[0]?.ok,
          false,
          "the Service still answered without its rules",
        );
        await sandbox.exec(NODE, ["iptables", "-t", "mangle", "-X", "KUBE-PROXY-CANARY"]);
        const restored = await daemon.waitForRules(
          "the jump rules and the canary to come back",
          (save) =>
            /-A PREROUTING .*-j KUBE-SERVICES/.test(save) &&
            /:KUBE-PROXY-CANARY/.test(save.split("*nat")[0] ?? ""),
        );
        assert.deepEqual(builtinJumps(restored), EXPECTED_JUMPS);
        assert.deepEqual(foreignLines(restored), foreignLines(beforeProxy.get("IPv4") ?? ""));
        const served = await env.served(5, VIP, { timeoutMs: 3_000 });
        assert.deepEqual(served.errors, {}, `${JSON.stringify(served.results)}${daemon.logTail(15)}`);
      });
    else
      it("rebuilds its table with a full sync when someone deletes it, other components' rules untouched (upstream's nftables mode: only at its next sync)", async () => {
        const { sandbox, daemon } = env;
        await sandbox.exec(NODE, ["nft", "delete", "table", "ip", "kube-proxy"]);
        // The monitor polls every second: the table is back before a probe could start.
        assert.doesNotMatch(await nft("list", "tables"), /^table ip kube-proxy$/m);
        await waitFor(
          "the table to come back",
          async () => (/dnat to 10\.244\.0\.31:80/.test(await ours()) ? true : undefined),
          15_000,
          () => daemon.logTail(),
        );
        const now = await daemon.save("IPv4");
        assert.deepEqual(builtinJumps(now), expectedJumps());
        assert.deepEqual(foreignLines(now), foreignLines(beforeProxy.get("IPv4") ?? ""));
        assert.match(await nft("list", "tables"), /table inet foreign-fw\b/);
        const served = await env.served(5, VIP, { timeoutMs: 3_000 });
        assert.deepEqual(served.errors, {}, `${JSON.stringify(served.results)}${daemon.logTail(15)}`);
      });

    it(
      mode === "iptables"
        ? "at start, removes nftables mode's tables and keeps every other nftables table"
        : "at start, writes over its own leftover tables and keeps every other nftables table",
      async () => {
        const tables = await nft("list", "tables");
        if (mode === "iptables") assert.doesNotMatch(tables, /^table ip6? kube-proxy$/m, tables);
        else {
          assert.match(tables, /^table ip kube-proxy$/m, tables);
          assert.match(tables, /^table ip6 kube-proxy$/m, tables);
        }
        assert.match(tables, /table inet foreign-fw\b/, tables);
        assert.match(tables, /table ip kube-proxy-not-ours\b/, tables);
      },
    );

    it("--cleanup leaves the ruleset as it was before the proxy ran", async () => {
      await env.stop();
      await env.cleanup();
      for (const family of ["IPv4", "IPv6"] as const) {
        const afterCleanup = normaliseSave(await saveAll(family));
        // Upstream's cleanup leaves KUBE-FIREWALL and its two jumps on purpose (kubelet owns a
        // duplicate; docs/iptables.md §5.7). Nothing else may remain.
        const leftovers = new Set([
          ":KUBE-FIREWALL -",
          "-A INPUT -j KUBE-FIREWALL",
          "-A OUTPUT -j KUBE-FIREWALL",
        ]);
        const residue = afterCleanup.filter(
          (line) => !leftovers.has(line) && !line.startsWith("-A KUBE-FIREWALL "),
        );
        assert.deepEqual(
          residue,
          normaliseSave(beforeProxy.get(family) ?? ""),
          `${family} after --cleanup:\n${afterCleanup.join("\n")}`,
        );
      }
      const tables = await nft("list", "tables");
      assert.doesNotMatch(tables, /^table ip6? kube-proxy$/m, tables);
      assert.match(tables, /table inet foreign-fw\b/, tables);
      assert.match(tables, /table ip kube-proxy-not-ours\b/, tables);
    });
  });
