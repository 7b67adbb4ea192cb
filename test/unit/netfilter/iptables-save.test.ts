import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import fc from "fast-check";
import { parseIptablesSave, tokenize } from "../../../src/netfilter/iptables-save.ts";
import { RulesetParseError, baseChainsFor } from "../../../src/netfilter/model.ts";
import type { Ruleset } from "../../../src/netfilter/model.ts";
import { KubeProxyError } from "../../../src/errors.ts";

const here = new URL(".", import.meta.url).pathname;
// Upstream's verbatim iptables-restore payloads (provenance: test/fixtures/README.md).
const upstreamDumps = [
  new URL("../../fixtures/iptables/", import.meta.url),
  new URL("../../golden/iptables/SyncProxyRulesRepeated/", import.meta.url),
];
const netnsDump = readFileSync(`${here}fixtures/iptables-save-c.netns.txt`, "utf8");
const netnsDump6 = readFileSync(`${here}fixtures/ip6tables-save-c.netns.txt`, "utf8");

function rule(rs: Ruleset, table: string, chain: string, index: number) {
  const r = rs.tables.get(table)?.chains.get(chain)?.rules[index - 1];
  assert.ok(r, `${table}/${chain} #${index} exists`);
  return r;
}

test("tokenize keeps quoted words and unescapes what iptables-save escapes", () => {
  assert.deepEqual(tokenize(`-A X -m comment --comment "a \\"b\\" c\\\\d" -j ACCEPT`), [
    "-A",
    "X",
    "-m",
    "comment",
    "--comment",
    'a "b" c\\d',
    "-j",
    "ACCEPT",
  ]);
  assert.deepEqual(tokenize(`-A X -m comment --comment ""`), ["-A", "X", "-m", "comment", "--comment", ""]);
  assert.equal(tokenize(`-A X --comment "open`), undefined);
});

test("property: the quote-splitting fast path tokenizes exactly like the general path", () => {
  // A trailing tab forces the general (regex) path; the words must be the same.
  fc.assert(
    fc.property(fc.array(fc.constantFrom(" ", "  ", '"', "a", "b", "-", "!"), { maxLength: 24 }), (chars) => {
      const line = chars.join("");
      assert.deepEqual(tokenize(line), tokenize(`${line}\t`));
    }),
    { numRuns: 2000 },
  );
});

test("every upstream iptables payload parses, with one rule per -A line", () => {
  const files = upstreamDumps.flatMap((dir) =>
    readdirSync(dir)
      .filter((f) => f.endsWith(".txt"))
      .map((f) => new URL(f, dir)),
  );
  assert.ok(files.length >= 11);
  for (const f of files) {
    const text = readFileSync(f, "utf8");
    const rs = parseIptablesSave(text);
    let rules = 0;
    for (const t of rs.tables.values()) for (const c of t.chains.values()) rules += c.rules.length;
    const appended = text.split("\n").filter((l) => l.startsWith("-A ")).length;
    assert.equal(rules, appended, f.pathname);
  }
});

test("a real iptables-save -c dump from a network namespace: tables, policies, hooks, counters", () => {
  const rs = parseIptablesSave(netnsDump);
  assert.equal(rs.family, "IPv4");
  assert.deepEqual([...rs.tables.keys()], ["mangle", "raw", "filter", "nat"]);
  const input = rs.tables.get("filter")?.chains.get("INPUT");
  assert.equal(input?.policy, "ACCEPT");
  assert.equal(input?.hook, "INPUT");
  assert.equal(input?.priority, 0);
  assert.equal(rs.tables.get("filter")?.chains.get("KUBE-FORWARD")?.hook, undefined);
  assert.deepEqual(
    baseChainsFor(rs, "PREROUTING").map((b) => b.table.name),
    ["raw", "mangle", "nat"],
  );
  assert.deepEqual(
    baseChainsFor(rs, "OUTPUT").map((b) => b.table.name),
    ["raw", "mangle", "nat", "filter"],
  );
  const first = rule(rs, "filter", "INPUT", 1);
  assert.deepEqual(first.counters, { packets: 2, bytes: 176 });
  assert.equal(first.text, "-j KUBE-FIREWALL");
  assert.deepEqual(first.target, { kind: "jump", chain: "KUBE-FIREWALL" });
  const svc = rule(rs, "nat", "KUBE-SERVICES", 2);
  assert.deepEqual(svc.counters, { packets: 1, bytes: 60 });
  assert.equal(
    svc.line,
    netnsDump.split("\n").findIndex((l) => l.includes("-d 172.30.0.43/32 -p tcp -m comment")) + 1,
  );
  assert.deepEqual(
    svc.matches.map((m) => m.kind),
    ["destination", "protocol", "comment", "destinationPort"],
  );
  assert.deepEqual(rule(rs, "nat", "KUBE-SERVICES", 2).matches[2], {
    kind: "comment",
    text: "ns3/svc3:p80 cluster IP",
  });
  // The kernel hands back --or-mark / --xor-mark as --set-xmark: both must keep their meaning.
  assert.deepEqual(rule(rs, "nat", "KUBE-MARK-MASQ", 1).target, {
    kind: "mark",
    value: 0x4000,
    mask: 0x4000,
    text: "MARK --set-xmark 0x4000/0x4000",
  });
  assert.deepEqual(rule(rs, "nat", "KUBE-POSTROUTING", 2).target, {
    kind: "mark",
    value: 0x4000,
    mask: 0,
    text: "MARK --set-xmark 0x4000/0x0",
  });
  assert.deepEqual(rule(rs, "nat", "KUBE-SVC-X27LE4BHSL4DOUIK", 2).matches[1], {
    kind: "probability",
    probability: 0.5,
  });
  const hairpin = rule(rs, "nat", "KUBE-SEP-DKCFIS26GWF2WLWC", 1);
  assert.equal(hairpin.matches[0]?.kind, "source");
  // Foreign rules are kept; a module we do not model becomes an explicit unknown match.
  const foreign = rule(rs, "raw", "PREROUTING", 1);
  assert.deepEqual(foreign.matches[1], {
    kind: "unknown",
    module: "hashlimit",
    text: "-m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 5 --hashlimit-name foreign",
  });
  assert.deepEqual(foreign.target, { kind: "continue", name: "NOTRACK", text: "NOTRACK" });
  assert.deepEqual(rule(rs, "filter", "KUBE-FORWARD", 1).matches[1], {
    kind: "accounting",
    module: "nfacct",
  });
  const firewall = rule(rs, "filter", "KUBE-FIREWALL", 1);
  assert.deepEqual(firewall.matches[3], {
    kind: "ctstate",
    negated: true,
    states: ["RELATED", "ESTABLISHED", "DNAT"],
  });
  assert.equal(firewall.matches[0]?.kind === "source" && firewall.matches[0].negated, true);
});

test("an ip6tables-save dump is IPv6 and keeps REJECT options", () => {
  const rs = parseIptablesSave(netnsDump6);
  assert.equal(rs.family, "IPv6");
  const r = rule(rs, "filter", "KUBE-SERVICES", 1);
  assert.deepEqual(r.target, {
    kind: "verdict",
    verdict: "REJECT",
    text: "REJECT --reject-with icmp6-port-unreachable",
  });
  const d = r.matches[0];
  assert.ok(d?.kind === "destination" && d.cidr.family === "IPv6" && d.cidr.prefix === 128);
});

test("restore payloads: repeated table sections merge and -X deletes a declared chain", () => {
  const rs = parseIptablesSave(
    [
      "*nat",
      ":KUBE-SERVICES - [0:0]",
      ":KUBE-SVC-A - [0:0]",
      "-A KUBE-SERVICES -j KUBE-SVC-A",
      "COMMIT",
      "*nat",
      ":KUBE-SVC-B - [0:0]",
      "-X KUBE-SVC-B",
      "-A KUBE-SERVICES -j RETURN",
      "COMMIT",
      "",
    ].join("\n"),
  );
  const chains = rs.tables.get("nat")?.chains;
  assert.deepEqual([...(chains?.keys() ?? [])], ["KUBE-SERVICES", "KUBE-SVC-A"]);
  assert.deepEqual(
    chains?.get("KUBE-SERVICES")?.rules.map((r) => r.index),
    [1, 2],
  );
});

test("upstream's fake prints multi-word comments unquoted; they still parse as one comment", () => {
  const rs = parseIptablesSave(
    "*nat\n:PREROUTING - [0:0]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -m comment --comment kubernetes service portals -j KUBE-SERVICES\nCOMMIT\n",
  );
  const r = rule(rs, "nat", "PREROUTING", 1);
  assert.deepEqual(r.matches, [{ kind: "comment", text: "kubernetes service portals" }]);
  assert.deepEqual(r.target, { kind: "jump", chain: "KUBE-SERVICES" });
});

const broken: readonly [string, string, number, RegExp][] = [
  ["rule outside a table", "-A INPUT -j ACCEPT\n", 1, /outside of a table/],
  [
    "undeclared chain",
    "*filter\n:INPUT ACCEPT [0:0]\n-A NOPE -j ACCEPT\nCOMMIT\n",
    3,
    /NOPE was not declared/,
  ],
  [
    "bad address",
    "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 10.0.0.300 -j ACCEPT\nCOMMIT\n",
    3,
    /not an address/,
  ],
  [
    "unterminated quote",
    '*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment "x -j ACCEPT\nCOMMIT\n',
    3,
    /unterminated quote/,
  ],
  ["bad counters", "*filter\n:INPUT ACCEPT [0:0]\n[1:x] -A INPUT -j ACCEPT\nCOMMIT\n", 3, /bad counters/],
  ["missing COMMIT", "*filter\n:INPUT ACCEPT [0:0]\n", 1, /no COMMIT/],
  ["policy on a user chain", "*filter\n:KUBE-X DROP [0:0]\nCOMMIT\n", 2, /not a built-in chain/],
  [
    "stray word",
    "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT tcp -j ACCEPT\nCOMMIT\n",
    3,
    /unexpected word "tcp"/,
  ],
  ["unknown line", "*filter\n:INPUT ACCEPT [0:0]\n-I INPUT -j ACCEPT\nCOMMIT\n", 3, /unsupported line/],
];

for (const [name, text, line, reason] of broken) {
  test(`parse error names the line: ${name}`, () => {
    assert.throws(
      () => parseIptablesSave(text),
      (error: unknown) => {
        assert.ok(error instanceof RulesetParseError);
        assert.ok(error instanceof KubeProxyError);
        assert.equal(error.code, "KPT_RULESET_PARSE");
        assert.equal(error.lineNumber, line);
        assert.match(error.message, reason);
        assert.match(error.message, new RegExp(`^line ${line}: `));
        return true;
      },
    );
  });
}

test("property: any garbage line injected into a valid dump is reported at its own line", () => {
  const lines = netnsDump.split("\n");
  const ruleLines = lines
    .map((l, i) => [l, i] as const)
    .filter(([l]) => l.startsWith("["))
    .map(([, i]) => i);
  fc.assert(
    fc.property(
      fc.constantFrom(...ruleLines),
      fc.constantFrom("-A", "--bogus", "!", "-s 1.2.3.4/33", '"'),
      (at, junk) => {
        const copy = [...lines];
        copy[at] = `${copy[at]} ${junk}`;
        try {
          parseIptablesSave(copy.join("\n"));
          return false;
        } catch (error) {
          return error instanceof RulesetParseError && error.lineNumber === at + 1;
        }
      },
    ),
    { numRuns: 60 },
  );
});
