import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  explainNftService,
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
