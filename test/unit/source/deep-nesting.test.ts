/**
 * The fuzz campaign's subset finding (docs/reliability.md): an ~800 KB text, a mapping nested
 * about 900 levels deep, that `yaml` refuses ("Maximum call stack size exceeded", its
 * RESOURCE_EXHAUSTION error: its composer recurses once per level, and how deep it gets depends
 * on the stack in use when it is called) while the subset parser returned documents. The subset
 * parser now leaves any text nested deeper than MAX_SUBSET_DEPTH levels to `yaml`, which decides.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseAllDocuments } from "yaml";
import { InputError } from "../../../src/errors.ts";
import { parseManifests } from "../../../src/source/manifests.ts";
import { MAX_SUBSET_DEPTH, parseYamlSubset } from "../../../src/source/yaml-subset.ts";

/** `depth` block mappings, one inside the other (`k:` indented 2 more each level), then `v`. */
function nested(depth: number, key = "k"): string {
  const lines: string[] = [];
  for (let i = 0; i < depth; i++) lines.push(`${" ".repeat(2 * i)}${key}:`);
  lines.push(`${" ".repeat(2 * depth)}v`, "");
  return lines.join("\n");
}

function yamlErrors(text: string): string[] {
  const docs = parseAllDocuments(text);
  return (Array.isArray(docs) ? docs : [docs]).flatMap((d) => d.errors.map((e) => e.code));
}

test("a text nested deeper than yaml can compose is refused, as yaml refuses it", () => {
  // 1,200 levels (1.4 MB) overflow yaml's stack even when it is called with a nearly empty one.
  const text = nested(1_200);
  assert.deepEqual(yamlErrors(text), ["RESOURCE_EXHAUSTION"], "yaml refuses the text");
  assert.equal(parseYamlSubset(text), null);
  assert.throws(
    () => parseManifests(text, "deep.yaml"),
    (err: unknown) =>
      err instanceof InputError && /^deep\.yaml: line \d+: Maximum call stack/.test(err.message),
  );
});

test("nesting up to the limit stays in the subset; one level more goes to yaml with the same result", () => {
  const inside = nested(MAX_SUBSET_DEPTH - 1);
  const docs = parseYamlSubset(inside);
  assert.notEqual(docs, null);
  assert.deepStrictEqual(
    docs?.map((d) => d.value),
    parseAllDocuments(inside).map((d) => d.toJS() as unknown),
  );
  const beyond = nested(MAX_SUBSET_DEPTH + 1);
  assert.equal(parseYamlSubset(beyond), null);
  assert.deepEqual(yamlErrors(beyond), []);
});

test("sequences count as levels too, also a sequence at its key's indentation", () => {
  const items: string[] = [];
  for (let i = 0; i <= MAX_SUBSET_DEPTH; i++) items.push(`${" ".repeat(2 * i)}-`);
  items.push(`${" ".repeat(2 * (MAX_SUBSET_DEPTH + 1))}x`, "");
  assert.equal(parseYamlSubset(items.join("\n")), null);
  // `k:` then `- k:` at the same column: a mapping and a sequence per two levels.
  const compact = (levels: number) => {
    const lines: string[] = [];
    for (let i = 0; i < levels; i++) lines.push(`${" ".repeat(2 * i)}k:`, `${" ".repeat(2 * i)}-`);
    return `${lines.join("\n")}\n${" ".repeat(2 * levels)}x\n`;
  };
  assert.notEqual(parseYamlSubset(compact(MAX_SUBSET_DEPTH / 2 - 1)), null);
  assert.equal(parseYamlSubset(compact(MAX_SUBSET_DEPTH / 2 + 1)), null);
});
