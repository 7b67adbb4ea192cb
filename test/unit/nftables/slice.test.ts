import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  explainNftService,
  nftLayoutItems,
  servicesInTable,
  sliceNftDump,
  splitTables,
} from "../../../src/backends/nftables/inspect.ts";
import { parseNftDump } from "../../../src/netfilter/nft/parse.ts";

const fixtures = new URL("../../fixtures/nftables/", import.meta.url);
const DUMPS = [
  "dumps/seed.json",
  "dumps/seed.payload.nft",
  "dumps/seed.list.txt",
  "OverallNFTablesRules.expected.txt",
];

test("explaining one Service from its slice of an nftables dump gives the explanation of the whole dump", () => {
  let services = 0;
  for (const name of DUMPS) {
    const text = readFileSync(new URL(name, fixtures), "utf8");
    const whole = splitTables(parseNftDump(text)).tables;
    for (const table of whole) {
      for (const ref of servicesInTable(table)) {
        const sliced = splitTables(sliceNftDump(text, ref)).tables.find(
          (t) => t.family === table.family && t.name === table.name,
        );
        assert.ok(sliced !== undefined, `${name} ${ref.namespace}/${ref.name}`);
        assert.deepEqual(
          explainNftService(sliced, ref),
          explainNftService(table, ref),
          `${name} ${ref.namespace}/${ref.name}`,
        );
        services++;
      }
    }
  }
  assert.ok(services >= 8, `${services} Services compared`);
});

test("the slice leaves out the other Services' chains and map elements", () => {
  const text = readFileSync(new URL("OverallNFTablesRules.expected.txt", fixtures), "utf8");
  const whole = splitTables(parseNftDump(text)).tables[0]!;
  const [first, second] = servicesInTable(whole);
  const sliced = splitTables(sliceNftDump(text, first!)).tables[0]!;
  const mentions = (t: typeof whole, ref: { namespace: string; name: string }) =>
    [...t.chains.keys()].filter((c) => c.includes(`-${ref.namespace}/${ref.name}/`)).length;
  assert.ok(mentions(sliced, first!) > 0);
  assert.equal(mentions(sliced, second!), 0);
  assert.ok(sliced.chains.size < whole.chains.size);
});

/** JSON as nft writes it: one line, jansson's `, ` and `: ` separators. */
function nftLayout(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(nftLayout).join(", ")}]`;
  if (value !== null && typeof value === "object")
    return `{${Object.entries(value)
      .map(([k, v]) => `${JSON.stringify(k)}: ${nftLayout(v)}`)
      .join(", ")}}`;
  return JSON.stringify(value);
}

test("an nft -j dump in nft's own layout is cut by string search, with the same explanations", () => {
  const pretty = readFileSync(new URL("dumps/seed.json", fixtures), "utf8");
  const dump = JSON.parse(pretty) as { nftables: Record<string, { chain?: string; name?: string }>[] };
  // A second Service: copies of the seed's per-Service chains and rules under another name.
  const perService = /^(?:service|local|external|firewall|endpoint)-[A-Z0-9]{8}-([^/]+)\/([^/]+)\//;
  const ownerOf = (item: Record<string, { chain?: string; name?: string }>) =>
    perService.exec(item["rule"]?.chain ?? item["chain"]?.name ?? "");
  const copies = dump.nftables
    .filter((item) => ownerOf(item) !== null)
    .map(
      (item) => JSON.parse(JSON.stringify(item).replaceAll("-default/nginx/", "-other/web/")) as typeof item,
    );
  const text = nftLayout({ nftables: [...dump.nftables, ...copies] });
  const whole = splitTables(parseNftDump(text)).tables[0]!;
  const ref = { namespace: "default", name: "nginx" };
  const items = nftLayoutItems(text, ref);
  assert.ok(items !== null, "nft's layout is recognised");
  const owners = items.map((t) => ownerOf(JSON.parse(t) as Record<string, { chain?: string }>)?.slice(1, 3));
  assert.ok(owners.some((o) => o?.join("/") === "default/nginx"));
  assert.ok(!owners.some((o) => o?.join("/") === "other/web"), "the other Service's items are skipped");
  assert.equal(owners.filter((o) => o === undefined).length, dump.nftables.length - copies.length);
  const sliced = splitTables(sliceNftDump(text, ref)).tables[0]!;
  assert.deepEqual(explainNftService(sliced, ref), explainNftService(whole, ref));
  // Any other layout goes to the scan of every character, with the same explanation.
  assert.equal(nftLayoutItems(pretty, ref), null);
  const other = text.replace('}, {"rule"', '},{"rule"');
  assert.equal(nftLayoutItems(other, ref), null);
  assert.deepEqual(
    explainNftService(splitTables(sliceNftDump(other, ref)).tables[0]!, ref),
    explainNftService(whole, ref),
  );
});
