/**
 * docs/errors.md documents every error code: each `"KPT_…"` literal in src/ has a `## KPT_…`
 * section there, and every section names a code that src/ still has.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

const src = new URL("../../src/", import.meta.url).pathname;
const doc = new URL("../../docs/errors.md", import.meta.url);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith(".ts") ? [path] : [];
  });
}

/** Codes contain digits too (KPT_K8S_API). */
function codesInSource(): Map<string, string> {
  const found = new Map<string, string>();
  for (const file of sourceFiles(src)) {
    for (const match of readFileSync(file, "utf8").matchAll(/"(KPT_[A-Z0-9_]+)"/g)) {
      const code = match[1] as string;
      if (!found.has(code)) found.set(code, file.slice(src.length - "src/".length));
    }
  }
  return found;
}

function codesInDoc(): string[] {
  return [...readFileSync(doc, "utf8").matchAll(/^## (KPT_[A-Z0-9_]+)\s*$/gm)].map((m) => m[1] as string);
}

test("src/ has error codes to check", () => {
  assert.ok(codesInSource().size >= 10);
});

test("every KPT_ code in src/ is documented in docs/errors.md", () => {
  const documented = new Set(codesInDoc());
  const missing = [...codesInSource()]
    .filter(([code]) => !documented.has(code))
    .map(([c, f]) => `${c} (${f})`);
  assert.deepEqual(missing, [], "add a `## <code>` section to docs/errors.md");
});

test("docs/errors.md documents no code that src/ no longer has, and each once", () => {
  const inSource = codesInSource();
  const documented = codesInDoc();
  assert.deepEqual(
    documented.filter((code) => !inSource.has(code)),
    [],
    "remove the section from docs/errors.md",
  );
  assert.deepEqual(
    documented.filter((code, i) => documented.indexOf(code) !== i),
    [],
  );
});
