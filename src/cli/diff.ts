import { readFile } from "node:fs/promises";
import { liveKernel } from "../backends/iptables/inspect.ts";
import { InputError } from "../errors.ts";
import { ProcessRunner, type Runner } from "../kernel/exec.ts";
import { DRIFT_JSON_SCHEMA, formatDrift, type DriftReport } from "../inspect/drift.ts";
import { renderNodeRuleset, renderPlan } from "./render.ts";
import { withApiObjects } from "./api-objects.ts";
import { manifestPaths } from "./rulesets.ts";
import { outputFormat } from "./trace.ts";

async function readDump(path: string): Promise<string> {
  try {
    if (path !== "-") return await readFile(path, "utf8");
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString("utf8");
  } catch (cause) {
    throw new InputError("--ruleset", `cannot read ${path}: ${(cause as Error).message}`, { cause });
  }
}

/**
 * `kube-proxy-ts diff`: what the kernel holds (live, or `--ruleset DUMP`) against what the proxy
 * would write now for the objects of `-f`/`--manifests` and the node flags, per family and per
 * Service: missing, extra and changed chains and rules; foreign objects listed apart.
 */
export async function diffCommand(
  options: Record<string, unknown>,
  runner: Runner = new ProcessRunner(),
): Promise<string> {
  const paths = manifestPaths(options);
  if (options["api"] === true) {
    if (paths.length > 0)
      throw new InputError("--api", "give either --api or the objects (-f/--manifests), not both");
    return withApiObjects(options, runner, undefined, (files) =>
      diffAgainst(options, files, runner, "the API server's objects (--api)"),
    );
  }
  if (paths.length === 0)
    throw new InputError(
      "diff",
      "needs the objects the proxy writes from: -f FILE|DIR|-, --manifests DIR or --api (a running daemon serves its own diff at /debug/kube-proxy-ts/diff)",
    );
  return diffAgainst(options, paths, runner, paths.join(", "));
}

async function diffAgainst(
  options: Record<string, unknown>,
  paths: string[],
  runner: Runner,
  objects: string,
): Promise<string> {
  const format = outputFormat(options["output"]);
  const plan = await renderPlan({ ...options, filename: paths });
  const { backend } = plan;
  const rulesetPath = options["ruleset"];
  if (backend.liveDrift !== undefined) {
    if (typeof rulesetPath === "string")
      throw new InputError(
        "--ruleset",
        `${backend.mode} mode compares with the live kernel only (run without --ruleset)`,
      );
    const live = [];
    for (const target of plan.targets) live.push(await backend.liveDrift(target, runner));
    const reports = live.map((l) => l.drift);
    if (format === "json") return JSON.stringify({ schema: DRIFT_JSON_SCHEMA, reports }, null, 2) + "\n";
    const header = `kernel: live (${[...new Set(live.map((l) => l.source))].join(", ")})\nintended: rendered from ${paths.join(", ")} for node ${plan.targets[0]?.node.name ?? ""}\n`;
    return header + reports.map(formatDrift).join("");
  }
  const compare = backend.drift;
  if (compare === undefined)
    throw new InputError("--proxy-mode", `${backend.mode} mode has no drift check in this version`);
  if (typeof rulesetPath === "string" && plan.targets.length > 1)
    throw new InputError("--ruleset", "a dump holds one IP family: pass --ip-family IPv4 or IPv6");
  const kernel = typeof rulesetPath === "string" ? null : await liveKernel(runner);
  const reports: DriftReport[] = [];
  for (const target of plan.targets) {
    const intended = await renderNodeRuleset(plan, target);
    const held = kernel === null ? await readDump(rulesetPath as string) : await kernel.dump(target.family);
    reports.push(compare(intended.text, held, target.family));
  }
  if (format === "json") return JSON.stringify({ schema: DRIFT_JSON_SCHEMA, reports }, null, 2) + "\n";
  const source =
    kernel === null
      ? `kernel: dump ${String(rulesetPath)}`
      : `kernel: live (${plan.targets.map((t) => kernel.saveCommand(t.family).replace(/ -c$/, "")).join(", ")}; ${kernel.detection.reason})`;
  const header = `${source}\nintended: rendered from ${objects} for node ${plan.targets[0]?.node.name ?? ""}\n`;
  return header + reports.map(formatDrift).join("");
}
