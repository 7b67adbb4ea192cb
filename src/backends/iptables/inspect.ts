/**
 * iptables mode's kernel reader for the see-inside tools: `iptables-save -c` per family, or,
 * for one Service (explain), that Service's chains listed one by one.
 */
import { InputError } from "../../errors.ts";
import { detectBackend, type BackendDetection } from "../../kernel/detect.ts";
import type { Runner } from "../../kernel/exec.ts";
import { localAddresses as readLocalAddresses } from "../../kernel/ip.ts";
import {
  Iptables,
  jumpRuleArgs,
  quoteRuleArg,
  type IptablesInterface,
  type JumpRule,
} from "../../kernel/iptables.ts";
import { formatCIDR, type IPFamily } from "../../ip.ts";
import { parseIptablesSave, type ParseOptions } from "../../netfilter/iptables-save.ts";
import { BUILT_IN_CHAINS, chainsToFollow, saveFromListings } from "../../netfilter/chain-listing.ts";
import { sliceServiceDump } from "../../netfilter/slice.ts";
import { RulesetParseError, type Chain, type Ruleset } from "../../netfilter/model.ts";
import type { InspectionSource } from "../../inspect/types.ts";
import type { Clock } from "../../proxy/clock.ts";
import type { RulesetProblem, RulesetReader } from "../types.ts";
import { JUMP_CHAINS, KUBE_MARK_MASQ } from "./chains.ts";

/**
 * `iptables-save -c` for trace, explain and the web view. At 10,000 Services the save prints
 * 430,000 lines; on a loaded node that took 52 s here, past the wrappers' 30 s default.
 */
const INSPECT_SAVE = { counters: true, timeoutMs: 300_000 } as const;

/** How long the web view's reader keeps what it read: how old its counters may get. */
export const WEB_READING_MAX_AGE_MS = 5000;

/** What the web view's reader may keep a reading by. */
export interface InspectionKeeping {
  readonly clock: Clock;
  /** Kept at most this long (counters move without a ruleset change); default {@link WEB_READING_MAX_AGE_MS}. */
  readonly maxAgeMs?: number;
  /**
   * The nf_tables generation (iptables-nft: the rules are nf_tables objects): a change ends the
   * kept reading at once. Legacy iptables has none: a change shows within `maxAgeMs`.
   */
  readonly generation?: () => Promise<number>;
}

/**
 * Reads the live rules with counters through the iptables wrappers (one per IP family the proxy
 * runs, with the backend it detected: its save tool knows where the rules are) and the node's
 * addresses, in `netns` when given. With `keep` (the daemon's web view), a reading is kept while
 * it is young and the generation and the addresses are the same: at 10,000 Services one
 * `iptables-save -c` costs seconds, and the page's event stream asks every second.
 */
export function iptablesInspectionSource(
  runner: Runner,
  iptables: readonly Pick<IptablesInterface, "save">[],
  netns?: string,
  keep?: InspectionKeeping,
): InspectionSource {
  let kept: { at: number; generation: number | undefined; local: string; dumps: string[] } | undefined;
  return {
    async read() {
      // `ip addr` gives address/prefix; the tracer wants bare addresses.
      const addresses = async () =>
        (await readLocalAddresses(runner, netns)).map((a) => a.replace(/\/\d+$/, ""));
      const save = () => Promise.all(iptables.map((ipt) => ipt.save(undefined, INSPECT_SAVE)));
      if (keep === undefined) {
        const dumps = await save();
        return { mode: "iptables", dumps, localAddresses: await addresses() };
      }
      const local = await addresses();
      const now = keep.clock.now();
      // Asked before the save: a commit during it moves the generation, and the next read reads again.
      const generation = keep.generation === undefined ? undefined : await keep.generation();
      if (
        kept === undefined ||
        kept.generation !== generation ||
        kept.local !== local.join(" ") ||
        now - kept.at >= (keep.maxAgeMs ?? WEB_READING_MAX_AGE_MS)
      ) {
        kept = { at: now, generation, local: local.join(" "), dumps: await save() };
      }
      return { mode: "iptables", dumps: kept.dumps, localAddresses: local };
    },
  };
}

/** Parses a dump; a line the parser rejects is named together with where the dump came from. */
export function parseRuleset(
  text: string,
  origin: string,
  family?: IPFamily,
  slice: ParseOptions = {},
): Ruleset {
  try {
    return parseIptablesSave(text, family === undefined ? slice : { ...slice, family });
  } catch (error) {
    if (error instanceof RulesetParseError) throw new InputError(origin, error.message, { cause: error });
    throw error;
  }
}

/**
 * The node's live rules as the daemon sees them: the backend (nft or legacy) is detected the way
 * the daemon detects it, so a host whose unsuffixed `iptables` points at the other backend is
 * still read where kube-proxy-ts writes.
 */
export interface LiveKernel {
  readonly detection: BackendDetection;
  /** e.g. `iptables-nft-save -c`. */
  saveCommand(family: IPFamily): string;
  /** That family's save output with counters, parsed. */
  ruleset(family: IPFamily): Promise<Ruleset>;
  /** That family's save output, every table, without counters. */
  dump(family: IPFamily): Promise<string>;
  /** That family's save output with counters, unparsed. */
  countedDump(family: IPFamily): Promise<string>;
  /**
   * The chains one Service's packets can pass, read chain by chain, as `iptables-save -c`
   * would print them (chain-listing.ts): what `explain` reads at any number of Services.
   */
  serviceDump(
    family: IPFamily,
    service: { readonly namespace: string; readonly name: string },
  ): Promise<string>;
  /** How {@link serviceDump} reads, e.g. `iptables-nft -t nat -S CHAIN -v per chain`. */
  serviceReadCommand(family: IPFamily): string;
}

/** A Service's chains, the fixed ones and foreign ones reached included: far fewer than this. */
const MAX_SERVICE_CHAINS = 500;
/** Chains listed at once. */
const LIST_CONCURRENCY = 4;

/**
 * Reads the chains a Service's packets can pass, from the built-in chains on: each level's
 * chains at once (a few processes), the capture chains' rules followed only where they name
 * the Service.
 */
async function readServiceChains(
  ipt: Pick<Iptables, "listChain">,
  service: { readonly namespace: string; readonly name: string },
): Promise<string> {
  const tables: { table: "filter" | "nat"; chains: { chain: string; listing: string }[] }[] = [];
  for (const table of ["filter", "nat"] as const) {
    const chains: { chain: string; listing: string }[] = [];
    const seen = new Set<string>(BUILT_IN_CHAINS[table]);
    let level = [...BUILT_IN_CHAINS[table]];
    while (level.length > 0 && seen.size <= MAX_SERVICE_CHAINS) {
      const next: string[] = [];
      for (let i = 0; i < level.length; i += LIST_CONCURRENCY) {
        const batch = level.slice(i, i + LIST_CONCURRENCY);
        const listings = await Promise.all(batch.map((c) => ipt.listChain(table, c, INSPECT_SAVE.timeoutMs)));
        batch.forEach((chain, k) => {
          const listing = listings[k];
          if (listing === null || listing === undefined) return;
          chains.push({ chain, listing });
          for (const t of chainsToFollow(chain, listing, service.namespace, service.name))
            if (!seen.has(t)) {
              seen.add(t);
              next.push(t);
            }
        });
      }
      level = next;
    }
    tables.push({ table, chains });
  }
  return saveFromListings(tables);
}

export async function liveKernel(runner: Runner): Promise<LiveKernel> {
  const detection = await detectBackend(runner);
  const iptables = (family: IPFamily): Iptables =>
    new Iptables({ runner, family, backend: detection.backend });
  const saveCommand = (family: IPFamily): string => `${iptables(family).binaries.save} -c`;
  return {
    detection,
    saveCommand,
    async ruleset(family) {
      const dump = await iptables(family).save(undefined, INSPECT_SAVE);
      return parseRuleset(dump, saveCommand(family), family);
    },
    dump: (family) => iptables(family).save(),
    countedDump: (family) => iptables(family).save(undefined, INSPECT_SAVE),
    serviceDump: (family, service) => readServiceChains(iptables(family), service),
    serviceReadCommand: (family) =>
      `${iptables(family).binaries.iptables} -t TABLE -S CHAIN -v, chain by chain`,
  };
}

const jumpsTo = (chain: Chain | undefined, target: string): boolean =>
  chain?.rules.some(
    (r) => (r.target?.kind === "jump" || r.target?.kind === "goto") && r.target.chain === target,
  ) === true;

function jumpRuleText(row: JumpRule): string {
  return `-A ${row.srcChain} ${jumpRuleArgs(row).map(quoteRuleArg).join(" ")}`;
}

/**
 * What an iptables ruleset lacks for packets to reach the proxy's rules: the built-in chains and
 * the jump rules the daemon ensures on every full sync (`JUMP_CHAINS`, docs/iptables.md §2.1).
 * A `render` payload has neither: traced as is, every packet would fall through to ACCEPT.
 */
export function iptablesRulesetProblems(ruleset: Ruleset): RulesetProblem[] {
  const tables = [...new Set(JUMP_CHAINS.map((r) => r.table))];
  const ours = tables.some((t) =>
    [...(ruleset.tables.get(t)?.chains.keys() ?? [])].some((c) => c.startsWith("KUBE-")),
  );
  if (!ours)
    return [
      {
        kind: "no-proxy-chains",
        message: `the ruleset holds none of the proxy's chains (no KUBE-* chain in ${tables.join(" or ")})`,
      },
    ];
  const problems: RulesetProblem[] = [];
  const missingBase = new Set<string>();
  for (const row of JUMP_CHAINS) {
    const table = ruleset.tables.get(row.table);
    const src = table?.chains.get(row.srcChain);
    if (src?.hook === undefined) {
      const key = `${row.table} ${row.srcChain}`;
      if (!missingBase.has(key))
        problems.push({
          kind: "missing-base-chain",
          message: `built-in chain ${key} is not in the ruleset, so nothing on that hook reaches the proxy's chains`,
        });
      missingBase.add(key);
      continue;
    }
    if (jumpsTo(src, row.dstChain)) continue;
    problems.push({
      kind: "missing-entry-jump",
      message: `${row.table} ${row.srcChain} does not jump to ${row.dstChain} (the daemon ensures: ${jumpRuleText(row)})`,
    });
  }
  return problems;
}

/** The CIDRs of the local-traffic detector: `! -s CIDR … -j KUBE-MARK-MASQ` in the nat chains. */
export function iptablesPodCidrs(ruleset: Ruleset): string[] {
  const found = new Set<string>();
  for (const chain of ruleset.tables.get("nat")?.chains.values() ?? []) {
    for (const rule of chain.rules) {
      if (rule.target?.kind !== "jump" || rule.target.chain !== KUBE_MARK_MASQ) continue;
      for (const m of rule.matches) if (m.kind === "source" && m.negated) found.add(formatCIDR(m.cidr));
    }
  }
  return [...found];
}

export const iptablesRulesets: RulesetReader = {
  dumpTool: (family) => (family === "IPv4" ? "iptables-save" : "ip6tables-save"),
  parse: parseRuleset,
  parseForService: (text, origin, service, family) => {
    const slice = sliceServiceDump(text, service.namespace, service.name);
    return parseRuleset(slice.text, origin, family, slice.options);
  },
  problems: iptablesRulesetProblems,
  podCidrs: iptablesPodCidrs,
};
