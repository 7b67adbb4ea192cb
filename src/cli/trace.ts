import { readFile } from "node:fs/promises";
import { backendFor } from "../backends/index.ts";
import type { InspectDump, ModeInspector, ProxyMode } from "../backends/types.ts";
import { InputError } from "../errors.ts";
import { liveKernel, parseRuleset, type LiveKernel } from "../backends/iptables/inspect.ts";
import { ProcessRunner, type Runner } from "../kernel/exec.ts";
import { localAddresses } from "../kernel/ip.ts";
import type { IPFamily } from "../ip.ts";
import { parseIP } from "../ip.ts";
import type { Ruleset } from "../netfilter/model.ts";
import { formatTrace, packetFromFlags, tracePacket, traceToJson } from "../netfilter/tracer.ts";

export type OutputFormat = "text" | "json";

export function outputFormat(value: unknown): OutputFormat {
  if (value === undefined || value === "text") return "text";
  if (value === "json") return "json";
  throw new InputError("--output", `must be text or json, not ${JSON.stringify(value)}`);
}

async function readText(path: string): Promise<string> {
  if (path !== "-") return readFile(path, "utf8");
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** The text of `--ruleset FILE` (`-` for stdin), for any mode's reader. */
export async function rulesetDump(path: string): Promise<InspectDump> {
  try {
    return { text: await readText(path), origin: `--ruleset ${path}` };
  } catch (cause) {
    throw new InputError("--ruleset", `cannot read ${path}: ${(cause as Error).message}`, { cause });
  }
}

/** A dump named by `--ruleset FILE` (`-` for stdin). */
export async function fileRuleset(path: string, family?: IPFamily): Promise<Ruleset> {
  const dump = await rulesetDump(path);
  return parseRuleset(dump.text, dump.origin, family);
}

/** The see-inside tools of a mode that brings its own (`--proxy-mode`). */
export async function inspectorFor(mode: string): Promise<ModeInspector> {
  const backend = await backendFor(mode as ProxyMode);
  if (backend.inspector === undefined)
    throw new InputError("--proxy-mode", `${mode} mode has no trace or explain of its own`);
  return backend.inspector;
}

/** `--local-addresses a,b/24,…` → bare addresses (the prefix length does not matter to addrtype). */
export function addressList(value: string): string[] {
  const out: string[] = [];
  for (const item of value.split(",")) {
    const trimmed = item.trim();
    if (trimmed === "") continue;
    const ip = trimmed.split("/")[0] ?? "";
    if (parseIP(ip) === undefined) throw new InputError("--local-addresses", `not an IP address: ${trimmed}`);
    out.push(ip);
  }
  return out;
}

/** The kernel's `recent` lists (session affinity) are not in a dump: explore both ways, or assume a new client. */
function affinityAssumption(value: unknown): "unknown" | "new-client" {
  if (value === undefined || value === "unknown") return "unknown";
  if (value === "new-client") return "new-client";
  throw new InputError("--affinity", `must be unknown or new-client, not ${JSON.stringify(value)}`);
}

/**
 * `kube-proxy-ts trace`: one packet through the live kernel's ruleset (default) or a dump
 * (`--ruleset`), every path with its probability, verdict, DNAT and masquerade.
 */
export async function traceCommand(
  options: Record<string, unknown>,
  runner: Runner = new ProcessRunner(),
): Promise<string> {
  const format = outputFormat(options["output"]);
  const { packet, origin } = packetFromFlags({
    src: String(options["src"]),
    dst: String(options["dst"]),
    ...(typeof options["proto"] === "string" ? { proto: options["proto"] } : {}),
    ...(typeof options["from"] === "string" ? { from: options["from"] } : {}),
    ...(typeof options["state"] === "string" ? { state: options["state"] } : {}),
  });
  const rulesetPath = options["ruleset"];
  const given = options["localAddresses"];
  const mode = options["proxyMode"];
  if (typeof mode === "string" && mode !== "iptables") {
    return (await inspectorFor(mode)).trace({
      packet,
      origin,
      format,
      runner,
      ...(typeof rulesetPath === "string" ? { dump: await rulesetDump(rulesetPath) } : {}),
      ...(typeof given === "string" ? { localAddresses: addressList(given) } : {}),
      affinity: affinityAssumption(options["affinity"]) === "new-client" ? "new-client" : "kernel",
    });
  }
  const family = parseIP(packet.dst)?.family ?? "IPv4";
  let kernel: LiveKernel | undefined;
  let ruleset: Ruleset;
  if (typeof rulesetPath === "string") {
    ruleset = await fileRuleset(rulesetPath, family);
  } else {
    kernel = await liveKernel(runner);
    ruleset = await kernel.ruleset(family);
  }
  // A dump says nothing about the node's addresses: without the flag only loopback is local.
  const local =
    typeof given === "string"
      ? addressList(given)
      : kernel !== undefined
        ? (await localAddresses(runner)).map((a) => a.split("/")[0] ?? a)
        : [];
  const result = tracePacket(ruleset, packet, {
    localAddresses: local,
    origin,
    recent: affinityAssumption(options["affinity"]),
  });
  if (format === "json") return JSON.stringify(traceToJson(result), null, 2) + "\n";
  const header =
    kernel !== undefined
      ? `ruleset: live kernel (${kernel.saveCommand(family)}; ${kernel.detection.reason}), local addresses: ${local.join(", ")}`
      : `ruleset: ${String(rulesetPath)}, local addresses: ${local.length === 0 ? "loopback only (pass --local-addresses)" : local.join(", ")}`;
  return `${header}\n${formatTrace(result)}`;
}
