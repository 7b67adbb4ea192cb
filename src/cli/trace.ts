import { backendFor } from "../backends/index.ts";
import type { InspectDump, ModeInspector, ProxyMode } from "../backends/types.ts";
import { InputError } from "../errors.ts";
import { ProcessRunner, type Runner } from "../kernel/exec.ts";
import { cidrContains, isLoopback, parseCIDR, parseIP, sameAddress } from "../ip.ts";
import type { TracePacket } from "../netfilter/tracer.ts";
import { formatTrace, packetFromFlags, tracePacket, traceToJson, type Origin } from "../netfilter/tracer.ts";
import {
  addressList,
  manifestPaths,
  readText,
  RulesetLoader,
  rulesetJson,
  type LoadedRuleset,
} from "./rulesets.ts";

export { addressList } from "./rulesets.ts";

/** The text of `--ruleset FILE` (`-` for stdin), for a mode's own reader. */
export async function rulesetDump(path: string): Promise<InspectDump> {
  try {
    return {
      text: await readText(path),
      origin: `--ruleset ${path}`,
    };
  } catch (cause) {
    throw new InputError("--ruleset", `cannot read ${path}: ${(cause as Error).message}`, { cause });
  }
}

/** The see-inside tools of a mode that brings its own (`--proxy-mode`). */
export async function inspectorFor(mode: string): Promise<ModeInspector> {
  const backend = await backendFor(mode as ProxyMode);
  if (backend.inspector === undefined)
    throw new InputError("--proxy-mode", `${mode} mode has no trace or explain of its own`);
  return backend.inspector;
}

export type OutputFormat = "text" | "json";

export function outputFormat(value: unknown): OutputFormat {
  if (value === undefined || value === "text") return "text";
  if (value === "json") return "json";
  throw new InputError("--output", `must be text or json, not ${JSON.stringify(value)}`);
}

/** The kernel's `recent` lists (session affinity) are not in a dump: explore both ways, or assume a new client. */
function affinityAssumption(value: unknown): "unknown" | "new-client" {
  if (value === undefined || value === "unknown") return "unknown";
  if (value === "new-client") return "new-client";
  throw new InputError("--affinity", `must be unknown or new-client, not ${JSON.stringify(value)}`);
}

/** Where the packet comes from, and why we think so. */
export interface OriginChoice {
  readonly origin: Origin;
  readonly reason: string;
}

/**
 * `--from` when it is not given: a source that is one of the node's addresses is the node
 * itself, a source in a pod CIDR a pod, anything else an external client.
 */
export function inferOrigin(src: string, loaded: LoadedRuleset): OriginChoice {
  const address = parseIP(src);
  if (address === undefined) throw new InputError("--src", `not an IP address: ${src}`);
  if (isLoopback(address)) return { origin: "node", reason: `inferred: ${src} is loopback` };
  const local = loaded.localAddresses.some((a) => {
    const parsed = parseIP(a);
    return parsed !== undefined && sameAddress(parsed, address);
  });
  if (local)
    return { origin: "node", reason: `inferred: ${src} is a local address (${loaded.localAddressesFrom})` };
  for (const text of loaded.podCidrs) {
    const cidr = parseCIDR(text);
    if (cidr !== undefined && cidrContains(cidr, address))
      return {
        origin: "pod",
        reason: `inferred: ${src} is in the pod CIDR ${text} (${loaded.podCidrsFrom})`,
      };
  }
  const pods =
    loaded.podCidrs.length === 0
      ? `pod CIDR ${loaded.podCidrsFrom}`
      : `pod CIDRs ${loaded.podCidrs.join(", ")}`;
  return {
    origin: "external",
    reason: `inferred: ${src} is neither a local address nor in the pod CIDRs (${pods}); pass --from to say otherwise`,
  };
}

interface FlowFlags {
  readonly src: string;
  readonly dst: string;
  readonly proto?: string;
  readonly from?: string;
  readonly state?: string;
}

const PROTOCOLS = new Set(["tcp", "udp", "sctp"]);
const ORIGINS = new Set(["pod", "node", "external"]);
const STATES = new Set(["new", "established"]);

/**
 * `trace --flows FILE`: one flow per line, either a JSON object with the flag names
 * (`{"src": "10.244.0.9:40000", "dst": "10.1.125.152:80", "proto": "udp", "from": "pod"}`) or
 * `SRC DST [PROTO] [FROM] [STATE]` in any order after DST; `#` starts a comment.
 */
export function parseFlows(text: string, origin: string): { line: number; flags: FlowFlags }[] {
  const out: { line: number; flags: FlowFlags }[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? "").trim();
    if (line === "" || line.startsWith("#")) continue;
    const where = `${origin} line ${i + 1}`;
    if (line.startsWith("{")) {
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (cause) {
        throw new InputError(where, `not a JSON object: ${(cause as Error).message}`, { cause });
      }
      const o = value as Record<string, unknown>;
      if (typeof o["src"] !== "string" || typeof o["dst"] !== "string")
        throw new InputError(where, `a flow needs "src" and "dst" strings: ${line}`);
      const flags: Record<string, string> = { src: o["src"], dst: o["dst"] };
      for (const key of ["proto", "from", "state"]) {
        const v = o[key];
        if (v === undefined) continue;
        if (typeof v !== "string") throw new InputError(where, `"${key}" must be a string`);
        flags[key] = v;
      }
      for (const key of Object.keys(o))
        if (!["src", "dst", "proto", "from", "state"].includes(key))
          throw new InputError(where, `unknown field "${key}" (src, dst, proto, from, state)`);
      out.push({ line: i + 1, flags: flags as unknown as FlowFlags });
      continue;
    }
    const [src, dst, ...rest] = line.split(/\s+/);
    if (src === undefined || dst === undefined)
      throw new InputError(where, `expected SRC DST [PROTO] [FROM] [STATE]: ${line}`);
    const flags: Record<string, string> = { src, dst };
    for (const word of rest) {
      const lower = word.toLowerCase();
      const key = PROTOCOLS.has(lower)
        ? "proto"
        : ORIGINS.has(lower)
          ? "from"
          : STATES.has(lower)
            ? "state"
            : undefined;
      if (key === undefined)
        throw new InputError(
          where,
          `"${word}" is no protocol (tcp, udp, sctp), origin (pod, node, external) or state (NEW, ESTABLISHED)`,
        );
      if (flags[key] !== undefined) throw new InputError(where, `${key} given twice: ${line}`);
      flags[key] = word;
    }
    out.push({ line: i + 1, flags: flags as unknown as FlowFlags });
  }
  if (out.length === 0) throw new InputError(origin, "no flows in the file");
  return out;
}

function packetOf(flags: FlowFlags): { packet: TracePacket; origin: Origin | undefined } {
  const { packet, origin } = packetFromFlags(flags);
  return { packet, origin: flags.from === undefined ? undefined : origin };
}

/**
 * Refuses a ruleset that cannot show what a node does (nothing reaches the proxy's entry
 * chains: a `render` payload, one table of a dump…); `--allow-incomplete` walks it anyway, with
 * the problems printed at the top. The live kernel is what it is: there they are warnings.
 */
function checkComplete(loaded: LoadedRuleset, allow: boolean): void {
  if (loaded.problems.length === 0 || allow || loaded.kind === "live") return;
  const list = loaded.problems.map((p) => `  - ${p.message}`).join("\n");
  throw new InputError(
    "trace",
    `${loaded.description} cannot show what a node does with a packet:\n${list}\n` +
      "A `render` payload lacks the built-in chains and the daemon's jump rules: trace the objects with " +
      "-f/--manifests, or a dump of `render --node-ruleset` or of the node's iptables-save; " +
      "--allow-incomplete traces it anyway.",
  );
}

function header(loaded: LoadedRuleset, choice: OriginChoice): string {
  const local = loaded.localAddresses.length === 0 ? "loopback only" : loaded.localAddresses.join(", ");
  const lines = [
    `ruleset: ${loaded.description}`,
    `local addresses: ${local} (${loaded.localAddressesFrom})`,
    `pod CIDRs: ${loaded.podCidrs.length === 0 ? "none" : loaded.podCidrs.join(", ")} (${loaded.podCidrsFrom})`,
    `origin: ${choice.origin} (${choice.reason})`,
  ];
  for (const p of loaded.problems) lines.push(`WARNING: ${p.message}`);
  return lines.join("\n") + "\n";
}

function traceOne(
  loaded: LoadedRuleset,
  flags: FlowFlags,
  options: Record<string, unknown>,
): { text: string; json: Record<string, unknown> } {
  const { packet, origin } = packetOf(flags);
  const choice: OriginChoice =
    origin === undefined ? inferOrigin(packet.src, loaded) : { origin, reason: "--from" };
  const result = tracePacket(loaded.ruleset, packet, {
    localAddresses: loaded.localAddresses,
    origin: choice.origin,
    recent: affinityAssumption(options["affinity"]),
  });
  return {
    text: `${header(loaded, choice)}${formatTrace(result)}`,
    json: { ...traceToJson(result), originReason: choice.reason, ruleset: rulesetJson(loaded) },
  };
}

function flagsOf(options: Record<string, unknown>): FlowFlags {
  const str = (key: string) => (typeof options[key] === "string" ? { [key]: options[key] as string } : {});
  if (typeof options["src"] !== "string" || typeof options["dst"] !== "string")
    throw new InputError("trace", "needs --src and --dst, or --flows FILE");
  return { src: options["src"], dst: options["dst"], ...str("proto"), ...str("from"), ...str("state") };
}

async function flowsOf(path: string): Promise<{ line: number; flags: FlowFlags }[]> {
  let text: string;
  try {
    text = await readText(path);
  } catch (cause) {
    throw new InputError("--flows", `cannot read ${path}: ${(cause as Error).message}`, { cause });
  }
  return parseFlows(text, `--flows ${path}`);
}

/**
 * `kube-proxy-ts trace`: one packet (or every flow of `--flows`, against one parse) through the
 * live kernel's ruleset (default), a dump (`--ruleset`) or the objects of `-f`/`--manifests`
 * rendered into a node's ruleset: every path with its probability, the rule that decided it,
 * DNAT and masquerade.
 */
export async function traceCommand(
  options: Record<string, unknown>,
  runner: Runner = new ProcessRunner(),
): Promise<string> {
  const format = outputFormat(options["output"]);
  const flowsPath = options["flows"];
  if (typeof flowsPath === "string" && (options["src"] !== undefined || options["dst"] !== undefined))
    throw new InputError("--flows", "give either --flows or --src/--dst");
  const flows =
    typeof flowsPath === "string" ? await flowsOf(flowsPath) : [{ line: 0, flags: flagsOf(options) }];
  // Every packet is checked before anything is read, so a typo on line 900 costs no parse.
  const families = flows.map((f) => {
    const { packet } = packetOf(f.flags);
    const family = parseIP(packet.dst)?.family;
    if (family === undefined) throw new InputError("--dst", `not an IP address: ${packet.dst}`);
    return family;
  });
  if (flowsPath === "-" && options["ruleset"] === "-")
    throw new InputError("--flows", "the flows and the ruleset cannot both come from stdin");
  const mode = options["proxyMode"];
  if (typeof mode === "string" && mode !== "iptables")
    return traceWithInspector(await inspectorFor(mode), flows, options, format, runner);
  const loader = new RulesetLoader(options, runner);
  const loads = new Map<string, Promise<LoadedRuleset>>();
  const load = (family: "IPv4" | "IPv6") => {
    let p = loads.get(family);
    if (p === undefined) {
      p = loader.load(family);
      loads.set(family, p);
    }
    return p;
  };
  return traceFlows(flows, typeof flowsPath === "string", format, async (flow, i) => {
    const loaded = await load(families[i]!);
    checkComplete(loaded, options["allowIncomplete"] === true);
    const traced = traceOne(loaded, flow.flags, options);
    return { text: traced.text, json: () => traced.json };
  });
}

/**
 * What `trace` prints for its flows, whichever mode traced them: a single packet's trace as is,
 * or for `--flows` one `=== flow N` block (text) or one JSON line with its `flow` number each.
 */
async function traceFlows(
  flows: readonly { line: number; flags: FlowFlags }[],
  listed: boolean,
  format: OutputFormat,
  traceFlow: (
    flow: { line: number; flags: FlowFlags },
    index: number,
  ) => Promise<{ text: string; json: () => object }>,
): Promise<string> {
  const out: string[] = [];
  for (let i = 0; i < flows.length; i++) {
    const flow = flows[i]!;
    const traced = await traceFlow(flow, i);
    if (!listed) return format === "json" ? JSON.stringify(traced.json(), null, 2) + "\n" : traced.text;
    out.push(
      format === "json"
        ? JSON.stringify({ flow: flow.line, ...traced.json() }) + "\n"
        : `=== flow ${flow.line}: ${flow.flags.src} → ${flow.flags.dst}\n${traced.text}\n`,
    );
  }
  return out.join("");
}

/**
 * nftables mode's tables rendered from `-f`/`--manifests` as `render` prints them, for the IP
 * families of the flows (both tables in one `nft -f` text: the tracer picks the packet's).
 */
async function renderedTables(
  options: Record<string, unknown>,
  paths: string[],
  flows: readonly { line: number; flags: FlowFlags }[],
): Promise<InspectDump> {
  const { renderCommand } = await import("./render.ts");
  const families = new Set(
    flows.map((f) => (packetFromFlags(f.flags).packet.dst.includes(":") ? "IPv6" : "IPv4")),
  );
  const texts: string[] = [];
  for (const ipFamily of ["IPv4", "IPv6"] as const)
    if (families.has(ipFamily)) texts.push(await renderCommand({ ...options, filename: paths, ipFamily }));
  return {
    text: texts.join("\n"),
    origin: `rendered from ${paths.join(", ")} (${[...families].sort().join(", ")})`,
  };
}

/**
 * `trace --proxy-mode MODE` for a mode with its own reader and tracer (nftables, ipvs): each flow
 * against the live table, the `--ruleset` dump or (nftables) the tables rendered from
 * `-f`/`--manifests` (read once); `--from` defaults to pod there.
 */
async function traceWithInspector(
  inspector: ModeInspector,
  flows: readonly { line: number; flags: FlowFlags }[],
  options: Record<string, unknown>,
  format: OutputFormat,
  runner: Runner,
): Promise<string> {
  const paths = manifestPaths(options);
  const rulesetPath = options["ruleset"];
  if (paths.length > 0 && options["proxyMode"] !== "nftables")
    throw new InputError(
      typeof options["manifests"] === "string" ? "--manifests" : "--filename",
      `renders iptables and nftables mode's rules: with --proxy-mode ${String(options["proxyMode"])} give --ruleset or trace the live kernel`,
    );
  if (paths.length > 0 && typeof rulesetPath === "string")
    throw new InputError("--ruleset", "give either a dump (--ruleset) or objects to render (-f/--manifests)");
  const dump =
    typeof rulesetPath === "string"
      ? await rulesetDump(rulesetPath)
      : paths.length > 0
        ? await renderedTables(options, paths, flows)
        : undefined;
  const given = options["localAddresses"];
  return traceFlows(flows, typeof options["flows"] === "string", format, async (flow) => {
    const { packet, origin } = packetFromFlags(flow.flags);
    const traced = await inspector.trace({
      packet,
      origin,
      format,
      runner,
      ...(dump !== undefined ? { dump } : {}),
      ...(typeof given === "string" ? { localAddresses: addressList(given) } : {}),
      affinity: affinityAssumption(options["affinity"]) === "new-client" ? "new-client" : "kernel",
    });
    return { text: traced, json: () => JSON.parse(traced) as object };
  });
}
