/**
 * Where `trace` and `explain` get the ruleset they walk, and what they say about it: the live
 * kernel, a dump (`--ruleset FILE|-`), or the objects of `-f`/`--manifests` rendered here into
 * the node's whole ruleset after a sync (built-in chains and jump rules included, as the daemon
 * leaves them). Each load carries the local addresses and pod CIDRs used and where they came
 * from, and the mode's list of what the ruleset lacks, so the answer never hides its inputs.
 */
import { readFile } from "node:fs/promises";
import { backendFor } from "../backends/index.ts";
import { liveKernel, type LiveKernel } from "../backends/iptables/inspect.ts";
import type { ProxyBackend, RulesetProblem, RulesetReader } from "../backends/types.ts";
import { resolveConfiguration } from "../config/load.ts";
import { InputError } from "../errors.ts";
import type { Runner } from "../kernel/exec.ts";
import { localAddresses as readLocalAddresses } from "../kernel/ip.ts";
import { clusterCIDRFor } from "../proxy/node.ts";
import type { IPFamily } from "../ip.ts";
import { parseIP } from "../ip.ts";
import type { Ruleset } from "../netfilter/model.ts";
import { renderNodeRuleset, renderPlan } from "./render.ts";

export type RulesetKind = "live" | "dump" | "rendered";

export interface LoadedRuleset {
  readonly ruleset: Ruleset;
  readonly kind: RulesetKind;
  /** In words, for the header: which file, which kernel tool, which objects. */
  readonly description: string;
  /** Bare addresses the tracer treats as the node's own (addrtype LOCAL). */
  readonly localAddresses: readonly string[];
  readonly localAddressesFrom: string;
  /** The pod CIDRs `--from` is inferred with. */
  readonly podCidrs: readonly string[];
  readonly podCidrsFrom: string;
  /** What keeps packets from reaching the proxy's rules in this ruleset (the mode's check). */
  readonly problems: readonly RulesetProblem[];
  /** Set for the live kernel: counters and conntrack can be read there. */
  readonly kernel?: LiveKernel;
}

/** The part of a load the JSON outputs carry under `ruleset`. */
export function rulesetJson(loaded: LoadedRuleset): Record<string, unknown> {
  return {
    kind: loaded.kind,
    description: loaded.description,
    family: loaded.ruleset.family,
    localAddresses: loaded.localAddresses,
    localAddressesFrom: loaded.localAddressesFrom,
    podCidrs: loaded.podCidrs,
    podCidrsFrom: loaded.podCidrsFrom,
    problems: loaded.problems,
  };
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

/** A file's text, or stdin's for `-`. */
export async function readText(path: string): Promise<string> {
  // One decode of the whole buffer: readFile(path, "utf8") decodes chunk by chunk, which costs
  // a third of `explain`'s time on a 30 MB dump.
  if (path !== "-") return (await readFile(path)).toString("utf8");
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** `-f` (repeatable) and `--manifests DIR`: the objects to render for ourselves. */
export function manifestPaths(options: Record<string, unknown>): string[] {
  const files = Array.isArray(options["filename"]) ? (options["filename"] as string[]) : [];
  const dir = options["manifests"];
  return typeof dir === "string" ? [...files, dir] : files;
}

/** The mode of `--proxy-mode` (iptables by default) and its dump reader. */
export async function modeReader(
  options: Record<string, unknown>,
): Promise<{ backend: ProxyBackend; reader: RulesetReader }> {
  const { config } = resolveConfiguration(options);
  const backend = await backendFor(config.mode);
  if (backend.rulesets === undefined)
    throw new InputError(
      "--proxy-mode",
      `${backend.mode} mode has no ruleset reader in this version: trace and explain read iptables rulesets`,
    );
  return { backend, reader: backend.rulesets };
}

function podCidrsOf(
  options: Record<string, unknown>,
  reader: RulesetReader,
  ruleset: Ruleset,
): { podCidrs: string[]; podCidrsFrom: string } {
  const { config } = resolveConfiguration(options);
  const given = clusterCIDRFor(config, ruleset.family);
  if (given !== null) return { podCidrs: [given], podCidrsFrom: "--cluster-cidr" };
  const found = reader.podCidrs(ruleset);
  return found.length > 0
    ? { podCidrs: found, podCidrsFrom: "the ruleset's local-traffic rules" }
    : { podCidrs: [], podCidrsFrom: "unknown: pass --cluster-cidr" };
}

/**
 * Loads rulesets from where the flags say, one family at a time; the live kernel's backend is
 * detected once. `family` may be left out for a dump only (then its header or first address
 * says which family it is).
 */
export class RulesetLoader {
  private kernel: Promise<LiveKernel> | undefined;

  /**
   * `readLocal: false`: the caller (explain) does not use the node's addresses. `service`: only
   * that Service's rules are needed (explain), so a mode that can parses only those.
   */
  constructor(
    private readonly options: Record<string, unknown>,
    private readonly runner: Runner,
    private readonly readLocal = true,
    private readonly service?: { readonly namespace: string; readonly name: string },
  ) {}

  async load(family: IPFamily | undefined): Promise<LoadedRuleset> {
    const { options, runner } = this;
    const { reader } = await modeReader(options);
    const service = this.service;
    const parse = (text: string, origin: string, f: IPFamily | undefined): Ruleset =>
      service !== undefined && reader.parseForService !== undefined
        ? reader.parseForService(text, origin, service, f)
        : reader.parse(text, origin, f);
    const paths = manifestPaths(options);
    const rulesetPath = options["ruleset"];
    if (typeof rulesetPath === "string" && paths.length > 0)
      throw new InputError(
        "--ruleset",
        "give either a dump (--ruleset) or objects to render (-f/--manifests)",
      );
    const given = options["localAddresses"];
    const flagged =
      typeof given === "string"
        ? { localAddresses: addressList(given), localAddressesFrom: "--local-addresses" }
        : undefined;
    let loaded: Omit<LoadedRuleset, "podCidrs" | "podCidrsFrom" | "problems">;
    if (typeof rulesetPath === "string") {
      let text: string;
      try {
        text = await readText(rulesetPath);
      } catch (cause) {
        throw new InputError("--ruleset", `cannot read ${rulesetPath}: ${(cause as Error).message}`, {
          cause,
        });
      }
      loaded = {
        ruleset: parse(text, `--ruleset ${rulesetPath}`, family),
        kind: "dump",
        description: rulesetPath === "-" ? "dump from stdin" : `dump ${rulesetPath}`,
        // A dump says nothing about the node's addresses: without the flag only loopback is local.
        ...(flagged ?? {
          localAddresses: [],
          localAddressesFrom: "none given: pass --local-addresses",
        }),
      };
    } else {
      if (family === undefined)
        throw new InputError("trace", "an IP family is needed to render or read the kernel");
      if (paths.length > 0) {
        loaded = await renderedRuleset(options, paths, family, reader, flagged);
      } else {
        this.kernel ??= liveKernel(runner);
        const kernel = await this.kernel;
        // One Service's explanation reads only its chains: at 10,000 Services the whole save is seconds.
        const how = service === undefined ? kernel.saveCommand(family) : kernel.serviceReadCommand(family);
        const text =
          service === undefined
            ? await kernel.countedDump(family)
            : await kernel.serviceDump(family, service);
        loaded = {
          ruleset: parse(text, how, family),
          kind: "live",
          description: `live kernel (${how}; ${kernel.detection.reason})`,
          ...(flagged ??
            (this.readLocal
              ? {
                  localAddresses: (await readLocalAddresses(runner)).map((a) => a.split("/")[0] ?? a),
                  localAddressesFrom: "this network namespace (ip addr)",
                }
              : { localAddresses: [], localAddressesFrom: "not read" })),
          kernel,
        };
      }
    }
    return {
      ...loaded,
      ...podCidrsOf(options, reader, loaded.ruleset),
      problems: reader.problems(loaded.ruleset),
    };
  }
}

async function renderedRuleset(
  options: Record<string, unknown>,
  paths: readonly string[],
  family: IPFamily,
  reader: RulesetReader,
  flagged: { localAddresses: string[]; localAddressesFrom: string } | undefined,
): Promise<Omit<LoadedRuleset, "podCidrs" | "podCidrsFrom" | "problems">> {
  const plan = await renderPlan({ ...options, filename: paths, ipFamily: family });
  const target = plan.targets[0];
  if (target === undefined) throw new InputError("render", `no ${family} ruleset to render`);
  const rendered = await renderNodeRuleset(plan, target);
  return {
    ruleset: reader.parse(rendered.text, `rendered ${family} ruleset`, family),
    kind: "rendered",
    description: `rendered from ${paths.join(", ")} for node ${target.node.name}: ${rendered.consumer} of a fresh node after one full sync (no kernel: counters unknown)`,
    ...(flagged ?? {
      localAddresses: target.localAddresses
        .map((a) => a.split("/")[0] ?? a)
        .filter((a) => parseIP(a)?.family === family),
      localAddressesFrom: "the node's IPs and loopback; --local-addresses to change",
    }),
  };
}
