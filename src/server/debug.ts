/**
 * The daemon's see-inside endpoints on the metrics address (docs/drift.md): the node ruleset
 * the proxy would leave now, the kernel's drift from it, and the last transaction the kernel
 * refused; the same three, as one text, for SIGUSR1.
 */
import type { IPFamily } from "../ip.ts";
import { DRIFT_JSON_SCHEMA, formatDrift } from "../inspect/drift.ts";
import type { SyncFailure, WriterInspection } from "../proxy/sync.ts";
import type { HttpResponse } from "./httpserver.ts";

export interface DebugSource {
  /** Per family: what the mode would leave now and the kernel's drift; null before the first sync. */
  inspect(): Promise<readonly { family: IPFamily; inspection: WriterInspection | null }[]>;
  /** The last refused sync of each family that had one. */
  failures(): readonly SyncFailure[];
}

export const DEBUG_PREFIX = "/debug/kube-proxy-ts/";

const text = (body: string): HttpResponse => ({
  status: 200,
  headers: { "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff" },
  body,
});

const json = (body: unknown): HttpResponse => ({
  status: 200,
  headers: { "Content-Type": "application/json", "X-Content-Type-Options": "nosniff" },
  body: JSON.stringify(body, null, 2) + "\n",
});

function intendedText(all: Awaited<ReturnType<DebugSource["inspect"]>>): string {
  return all
    .map(({ family, inspection }) =>
      inspection === null ? `# ${family}: nothing synced yet\n` : `# ${family}\n${inspection.intended}`,
    )
    .join("");
}

function diffText(all: Awaited<ReturnType<DebugSource["inspect"]>>): string {
  return all
    .map(({ family, inspection }) =>
      inspection === null ? `${family}: nothing synced yet\n` : formatDrift(inspection.drift),
    )
    .join("");
}

function failuresText(failures: readonly SyncFailure[]): string {
  if (failures.length === 0) return "no sync has failed\n";
  return failures
    .map((f) => {
      const more = f.notCaptured === 0 ? "" : ` (${f.notCaptured} later failure(s) not captured)`;
      const head = `${f.family} ${f.fullSync ? "full" : "partial"} sync refused at ${new Date(f.at).toISOString()}${more}: ${f.error}\n`;
      return head + (f.transaction === null ? "" : `--- refused transaction ---\n${f.transaction}\n`);
    })
    .join("\n");
}

/** Answers the debug paths; null for any other path. */
export async function debugResponse(source: DebugSource, path: string): Promise<HttpResponse | null> {
  switch (path) {
    case `${DEBUG_PREFIX}intended`:
      return text(intendedText(await source.inspect()));
    case `${DEBUG_PREFIX}diff`:
      return text(diffText(await source.inspect()));
    case `${DEBUG_PREFIX}diff.json`: {
      const reports = (await source.inspect()).flatMap((i) =>
        i.inspection === null ? [] : [i.inspection.drift],
      );
      return json({ schema: DRIFT_JSON_SCHEMA, reports });
    }
    case `${DEBUG_PREFIX}last-failure`:
      return json({ failures: source.failures() });
    default:
      return null;
  }
}

/** The three in one text (SIGUSR1). */
export async function debugDump(source: DebugSource): Promise<string> {
  const all = await source.inspect();
  return [
    "=== drift (the kernel against what the proxy would write now)",
    diffText(all),
    "=== last refused transaction",
    failuresText(source.failures()),
    "=== intended ruleset",
    intendedText(all),
  ].join("\n");
}
