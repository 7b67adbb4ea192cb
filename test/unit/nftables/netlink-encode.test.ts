/**
 * The netlink encoder against nft 1.0.6 itself: for each recorded case the batch we build is the
 * batch nft sends for the same text (test/fixtures/nftables/netlink/, see record.ts there), up to
 * set IDs, how many elements share one message and the order of a named set's elements. Every rule of every nftables golden compiles;
 * a rule outside the grammar is an error naming it; long element lists are split so that no
 * attribute overflows its 16-bit length.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { encodeBatch } from "../../../src/backends/nftables/netlink/encode.ts";
import { compileRule, RuleCompileError } from "../../../src/backends/nftables/netlink/rule.ts";
import type { NftCommand } from "../../../src/backends/nftables/transactions.ts";
import { canonicalBatch, splitBatch, type RawMessage } from "../../support/nft-mnl.ts";
import { netlinkCases } from "../../support/netlink-cases.ts";

const FIXTURES = new URL("../../fixtures/nftables/", import.meta.url);

function recorded(name: string): RawMessage[] {
  return readFileSync(new URL(`netlink/${name}.mnl.hex`, FIXTURES), "utf8")
    .trim()
    .split("\n")
    .map((line) => {
      const [type, hex] = line.split(" ");
      return { type: Number(type), payload: Buffer.from(hex ?? "", "hex") };
    });
}

const encode = (commands: readonly NftCommand[], family: "ip" | "ip6") =>
  encodeBatch(commands, {
    family,
    table: "kube-proxy",
    firstSeq: 1,
    ifIndex: (name) => {
      assert.equal(name, "lo");
      return 1;
    },
    containerType: () => undefined,
  });

for (const c of netlinkCases()) {
  test(`${c.name}: the batch nft sends for the same transaction`, () => {
    const ours = canonicalBatch(splitBatch(encode(c.commands, c.family).bytes));
    const theirs = canonicalBatch(recorded(c.name));
    assert.ok(theirs.length > 50, "the fixture holds nft's batch");
    // nft reorders the elements it adds to a named set; their order means nothing to the kernel.
    const named = (l: string) => l.includes(" elem ") && !l.includes("5f5f");
    assert.deepEqual(
      ours.filter((l) => !named(l)),
      theirs.filter((l) => !named(l)),
      "every message but named-set elements, in order",
    );
    assert.deepEqual(ours.filter(named).sort(), theirs.filter(named).sort(), "the elements of named sets");
  });
}

/** Every `add rule` of every golden expectation, as chain and rule body. */
function goldenRules(): Array<{ family: "ip" | "ip6"; chain: string; rule: string }> {
  const files = [
    "baseRules.expected.txt",
    "OverallNFTablesRules.expected.txt",
    "SyncProxyRulesStartup/expected.txt",
    ...readdirSync(new URL("SyncProxyRulesRepeated/", FIXTURES))
      .filter((f) => f.endsWith(".expected.txt"))
      .map((f) => `SyncProxyRulesRepeated/${f}`),
  ];
  const rules = [];
  for (const f of files) {
    for (const line of readFileSync(new URL(f, FIXTURES), "utf8").split("\n")) {
      const m = /^add rule (ip6?) kube-proxy (\S+) (.*)$/.exec(line);
      if (m !== null) rules.push({ family: m[1] as "ip" | "ip6", chain: m[2]!, rule: m[3]! });
    }
  }
  return rules;
}

test("every rule of every nftables golden compiles", () => {
  const rules = goldenRules();
  assert.ok(rules.length > 100, `${rules.length} rules`);
  for (const r of rules) {
    const compiled = compileRule(r.chain, r.rule, r.family, () => 1);
    assert.ok(compiled.exprs.length > 0, r.rule);
  }
});

test("a rule outside the grammar is an error naming the chain and the rule", () => {
  for (const rule of [
    "tcp dport 80 accept",
    "ip daddr 10.0.0.1 counter",
    "ip6 daddr ::1 drop",
    "meta l4proto icmp drop",
    "jump",
  ]) {
    assert.throws(
      () => compileRule("services", rule, "ip", () => 1),
      (err: unknown) =>
        err instanceof RuleCompileError && err.message.includes("services") && err.message.includes(rule),
      rule,
    );
  }
});

test("long element lists are split so that every attribute stays under 64 KiB", () => {
  const commands: NftCommand[] = [];
  for (let i = 0; i < 5_000; i++)
    commands.push({
      verb: "add",
      what: "element",
      element: {
        container: "service-ips",
        key: `172.30.${i >> 8}.${i & 255} . tcp . 80`,
        value: `goto service-ABCDEFGH-ns/svc${i}/tcp/http`,
      },
    });
  const batch = encodeBatch(commands, {
    family: "ip",
    table: "kube-proxy",
    firstSeq: 1,
    ifIndex: () => 1,
    containerType: (name) =>
      name === "service-ips" ? "ipv4_addr . inet_proto . inet_service : verdict" : undefined,
  });
  const messages = splitBatch(batch.bytes);
  assert.ok(messages.length > 5, `${messages.length} messages`);
  const elements = canonicalBatch(messages).filter((l) => l.includes(" elem "));
  assert.equal(elements.length, 5_000);
  for (const m of messages) assert.ok(m.payload.length < 65_536, `${m.payload.length} bytes`);
  assert.match(
    batch.describe(batch.lastSeq, commands) ?? "",
    /^add element service-ips \{ 172\.30\.\d+\.\d+ \. tcp \. 80 \} \(and \d+ more/,
  );
});

/** Top-level attributes of one message (after nfgenmsg): type → value. */
function attributes(m: RawMessage): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let off = 4; off + 4 <= m.payload.length;) {
    const len = m.payload.readUInt16LE(off);
    out.set(m.payload.readUInt16LE(off + 2) & 0x3fff, m.payload.subarray(off + 4, off + len));
    off += (len + 3) & ~3;
  }
  return out;
}

const NEWSET = 9;
const NEWSETELEM = 12;
const cstr = (b: Buffer | undefined): string | undefined => b?.subarray(0, b.indexOf(0)).toString();

test("with a tag, anonymous sets are named by us and their elements refer to them by ID alone", () => {
  const c = netlinkCases()[0]!;
  const batch = (tag: string | undefined) =>
    splitBatch(
      encodeBatch(c.commands, {
        family: c.family,
        table: "kube-proxy",
        firstSeq: 1,
        ifIndex: () => 1,
        containerType: () => undefined,
        ...(tag === undefined ? {} : { anonymousSetTag: tag }),
      }).bytes,
    );
  const plain = batch(undefined);
  const tagged = batch("t0");
  assert.equal(tagged.length, plain.length, "the same messages");
  const anonymous = tagged.filter(
    (m) => m.type === NEWSET && (attributes(m).get(3)!.readUInt32BE(0) & 1) === 1,
  );
  assert.ok(anonymous.length >= 3, `${anonymous.length} anonymous sets`);
  const names = anonymous.map((m) => cstr(attributes(m).get(2))!);
  for (const n of names) assert.match(n, /^__(set|map)t0_[0-9a-z]+$/);
  assert.equal(new Set(names).size, names.length, "unique names");
  const anonIds = new Set(anonymous.map((m) => attributes(m).get(10)!.readUInt32BE(0)));
  let anonElements = 0;
  for (const [i, m] of tagged.entries()) {
    if (m.type !== NEWSETELEM) continue;
    const a = attributes(m);
    const id = a.get(4)?.readUInt32BE(0);
    if (id !== undefined && anonIds.has(id)) {
      anonElements++;
      assert.equal(a.get(2), undefined, "no set name: the kernel finds the set by ID");
    } else assert.equal(cstr(a.get(2)), cstr(attributes(plain[i]!).get(2)), "named sets keep their name");
  }
  assert.ok(anonElements >= anonymous.length);
  // Everything else is byte for byte what nft sends.
  const other = (ms: RawMessage[]) =>
    canonicalBatch(ms.filter((m) => m.type !== NEWSET && m.type !== NEWSETELEM)).filter(
      (l) => !l.includes("5f5f"),
    );
  assert.deepEqual(other(tagged), other(plain));
});
