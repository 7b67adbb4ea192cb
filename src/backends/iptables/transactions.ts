/**
 * How one sync becomes iptables-restore transactions (`TransactionWriter`).
 *
 * The kernel tools' cost grows super-linearly with the size of one payload (iptables-nft
 * restore of 10,000 Services in one piece does not finish in useful time) and roughly linearly
 * with bounded pieces. Up to `maxServicesPerTransaction` rewritten Services, the result is the
 * single payload upstream writes, byte for byte. Beyond that, the per-Service chains go first in
 * bounded transactions, and one last transaction swaps in the capture rules, the filter table and
 * the stale-chain deletions. Ordering keeps every intermediate kernel state consistent:
 *   - a Service's chains (EXT → FW → SVC/SVL → SEP) always travel together, so every jump inside a
 *     transaction lands on a chain created in the same or an earlier transaction;
 *   - no capture rule points at a new chain before that chain exists, because capture rules only
 *     change in the last transaction;
 *   - stale chains are deleted only in the last transaction, after the capture rules that could
 *     reach them are gone.
 * KUBE-MARK-MASQ (jumped to from service chains) is declared and refilled in every chunk, so a
 * first sync on a clean host works too; re-declaring it inside one atomic restore never leaves it
 * empty for a packet.
 *
 * `previous`: what the last successful sync left in the kernel's top level (null after a start,
 * a failure or a flush). When the fixed parts are unchanged, the rules of nat KUBE-SERVICES and
 * KUBE-NODEPORTS and of the filter chains are edited in place instead of rewritten:
 * `-D` for rules that went away, then each new rule at its own position (`-I CHAIN n`, or `-A`
 * below the last rule that stays). Positions matter: KUBE-NODEPORTS holds a NodePort's
 * localhost rule (nfacct-counted) above its general rule, which matches the same packets, and
 * the nodeport tail must stay last in KUBE-SERVICES. On a 10,000-Service node a change then
 * costs its own rules, not a rewrite of 10,000 capture rules, and the kernel holds exactly the
 * rules, in the order, of upstream's payload. Too many edits, rules that stay but change order
 * (reordered externalIPs) or a repeated rule (a repeated externalIP) fall back to the rewrite.
 *
 * An edited top level is not rewritten, so nothing in such a transaction would notice that it
 * is gone (an external `iptables -t nat -F; -X`): upstream's partial payload fails then, on its
 * capture rules' jumps to the missing service chains, and the next sync is a full one. The
 * transaction that carries the edits therefore starts with a probe: a chain of its own that
 * jumps to nat's top-level chains and is deleted again, a no-op that fails when one is missing.
 */
import type { RestorePayload } from "../../kernel/iptables.ts";
import {
  KUBE_MARK_MASQ,
  KUBE_NODEPORTS,
  KUBE_POSTROUTING,
  KUBE_PROXY_PROBE,
  KUBE_SERVICES,
} from "./chains.ts";
import type { RenderResult, ServiceChainsBlock } from "./types.ts";

/** The first bounded transaction of a sync holds this many Services; each next one twice as many, up to the maximum. */
const FIRST_CHUNK_SERVICES = 50;

/**
 * Turns a sync into transactions one Service block at a time, as the renderer produces them
 * (`renderIptablesStream`): a bounded chunk is ready as soon as one more block than fits in it
 * has arrived, so the kernel can apply it while the rest is rendered. The last chunk is held
 * back until `finish`, because it may carry the top-level edits and stale-chain deletions, and a
 * sync of at most `max` Services is the single upstream payload.
 *
 * With `expectedBlocks` (how many blocks will come) above `max`, the chunks start small and
 * double (50, 100, 200, then `max`): the kernel starts on the first Services while the
 * renderer, cold at start-up, is still on the next ones, instead of waiting for `max` of them.
 */
export class TransactionWriter {
  private pending: ServiceChainsBlock[] = [];
  private chunks = 0;
  private readonly ramp: boolean;
  /** The `-A KUBE-MARK-MASQ …` rule every chunk refills. */
  private readonly markMasqRule: string | null;

  /** `fixedRuleLines`: nat's fixed rules (`natFixedRuleLines`, `RenderResult.nat.fixedRuleLines`). */
  constructor(
    private readonly max: number,
    private readonly previous: WrittenTopLevel | null,
    fixedRuleLines: readonly string[],
    expectedBlocks: number | null = null,
  ) {
    this.ramp = expectedBlocks !== null && expectedBlocks > max;
    this.markMasqRule = fixedRuleLines.find((l) => l.startsWith(`-A ${KUBE_MARK_MASQ} `)) ?? null;
  }

  /** Takes the next written Service block; returns a transaction when a chunk is complete. */
  add(block: ServiceChainsBlock): RestorePayload | null {
    this.pending.push(block);
    const size = this.ramp ? Math.min(this.max, FIRST_CHUNK_SERVICES * 2 ** this.chunks) : this.max;
    if (this.pending.length <= size) return null;
    const chunk = this.pending.splice(0, size);
    this.chunks++;
    return serviceChunk(chunk, this.markMasqRule, null, []);
  }

  /**
   * Every block added, when none has been sent yet (the sync may still be one transaction, made of
   * the result's payload); null once a chunk went out.
   */
  allBlocks(): readonly ServiceChainsBlock[] | null {
    return this.chunks === 0 ? this.pending : null;
  }

  /**
   * The remaining transactions, once the whole result is rendered; `topLevel` is
   * `writtenTopLevel(result)`, which the caller also keeps for the next sync.
   */
  finish(result: RenderResult, topLevel: WrittenTopLevel): RestorePayload[] {
    const blocks = this.pending;
    this.pending = [];
    const edits = this.previous === null ? null : topLevelEdits(this.previous, topLevel);
    if (edits !== null) {
      const stale = result.nat.deletedChains;
      const extra = stale.length + edits.nat.length + edits.filter.length > 0;
      return blocks.length > 0 || extra ? [serviceChunk(blocks, this.markMasqRule, edits, stale)] : [];
    }
    if (this.chunks === 0) return [result.payloadParts];
    return [serviceChunk(blocks, this.markMasqRule, null, []), topLevelTransaction(result)];
  }
}

/** Above this many capture-rule edits one rewrite of the top level is cheaper than the edits. */
const MAX_RULE_EDITS = 200;

/** One chain's rules as `-A …` lines in the order of upstream's payload, and as a set. */
export interface ChainLines {
  readonly lines: readonly string[];
  /** Kept with the lines: the next sync's edits look each rule up in the previous set. */
  readonly set: ReadonlySet<string>;
}

/** Rules of one table by chain. */
export type ChainRules = ReadonlyMap<string, ChainLines>;

/** The top level a sync leaves in the kernel, in the form the next sync's writer compares. */
export interface WrittenTopLevel {
  /** What edits never touch (declarations, KUBE-POSTROUTING, KUBE-MARK-MASQ): a change means a rewrite. */
  readonly fixed: string;
  /** The filter table's rules. */
  readonly filter: ChainRules;
  /** nat KUBE-SERVICES (the capture rules, then the nodeport tail) and KUBE-NODEPORTS. */
  readonly nat: ChainRules;
}

export function writtenTopLevel(result: RenderResult): WrittenTopLevel {
  const fixed = [...result.filter.chainLines, ...result.nat.topChainLines, ...result.nat.fixedRuleLines];
  return {
    fixed: fixed.join("\n"),
    filter: byChain(result.filter.ruleLines),
    nat: byChain([...result.nat.captureRuleLines, ...result.nat.tailRuleLines]),
  };
}

/** `-A CHAIN …` lines grouped by chain, each chain's lines in their order. */
function byChain(lines: readonly string[]): ChainRules {
  const chains = new Map<string, { lines: string[]; set: Set<string> }>();
  for (const line of lines) {
    const chain = line.slice(3, line.indexOf(" ", 3));
    const rules = chains.get(chain);
    if (rules === undefined) chains.set(chain, { lines: [line], set: new Set([line]) });
    else {
      rules.lines.push(line);
      rules.set.add(line);
    }
  }
  return chains;
}

interface TopLevelEdits {
  readonly filter: readonly string[];
  readonly nat: readonly string[];
}

/** The edit lines turning `previous` into `next`, or null when a rewrite is needed. */
function topLevelEdits(previous: WrittenTopLevel, next: WrittenTopLevel): TopLevelEdits | null {
  if (previous.fixed !== next.fixed) return null;
  const filter = tableEdits(previous.filter, next.filter);
  const nat = tableEdits(previous.nat, next.nat);
  if (filter === null || nat === null || filter.length + nat.length > MAX_RULE_EDITS) return null;
  return { filter, nat };
}

function tableEdits(before: ChainRules, after: ChainRules): string[] | null {
  const out: string[] = [];
  for (const chain of new Set([...before.keys(), ...after.keys()])) {
    const edits = chainEdits(chain, before.get(chain) ?? NO_LINES, after.get(chain) ?? NO_LINES);
    if (edits === null) return null;
    out.push(...edits);
  }
  return out;
}

/**
 * The lines turning one chain's rules `before` into `after`: the `-D`s first, then the new
 * rules top to bottom, each inserted at its position in `after` (every rule above it is there by
 * then, and the one it goes in front of is one that stays) or, below the last rule that stays,
 * appended. Null when that cannot give `after` exactly: a line that repeats (`-D` removes the
 * first match) or rules that stay but change order.
 */
function chainEdits(chain: string, before: ChainLines, after: ChainLines): string[] | null {
  const { lines: was, set: had } = before;
  const { lines: is, set: has } = after;
  if (had.size !== was.length || has.size !== is.length) return null;
  const out: string[] = [];
  for (const line of was) if (!has.has(line)) out.push(`-D ${line.slice(3)}`);
  let lastKept = -1;
  for (let i = 0; i < is.length; i++) if (had.has(is[i] as string)) lastKept = i;
  const prefix = `-A ${chain} `.length;
  let cursor = 0;
  for (let i = 0; i < is.length; i++) {
    const line = is[i] as string;
    if (had.has(line)) {
      while (!has.has(was[cursor] as string)) cursor++;
      if (was[cursor++] !== line) return null;
    } else if (i > lastKept) out.push(line);
    else out.push(`-I ${chain} ${i + 1} ${line.slice(prefix)}`);
  }
  return out;
}

const NO_LINES: ChainLines = { lines: [], set: new Set() };

/** nat chains an in-place edit relies on (KUBE-MARK-MASQ is declared in every transaction). */
const PROBED_NAT_CHAINS = [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING];

const PROBE_LINES =
  `:${KUBE_PROXY_PROBE} - [0:0]\n` +
  PROBED_NAT_CHAINS.map((c) => `-A ${KUBE_PROXY_PROBE} -j ${c}\n`).join("") +
  `-F ${KUBE_PROXY_PROBE}\n-X ${KUBE_PROXY_PROBE}\n`;

/**
 * One transaction of service chains, in pieces (the blocks' texts are not joined: the writer
 * writes pieces as they are). With `edits` (the last one of a sync) it also carries the
 * top-level edits and the stale-chain deletions: by then every rewritten chain that referred to a
 * stale chain has been rewritten, the capture rules that point at new chains come after those
 * chains, and the `-D` of a capture rule comes before the `-X` of its target.
 */
function serviceChunk(
  blocks: readonly ServiceChainsBlock[],
  markMasqRule: string | null,
  edits: TopLevelEdits | null,
  stale: readonly string[],
): string[] {
  const parts: string[] = [];
  if (edits !== null && edits.filter.length > 0) parts.push(`*filter\n${edits.filter.join("\n")}\nCOMMIT\n`);
  parts.push(`*nat\n${edits === null ? "" : PROBE_LINES}:${KUBE_MARK_MASQ} - [0:0]\n`);
  for (const block of blocks) parts.push(block.chainText);
  for (const c of stale) parts.push(`:${c} - [0:0]\n`);
  if (markMasqRule !== null) parts.push(`${markMasqRule}\n`);
  for (const block of blocks) parts.push(block.ruleText);
  for (const line of edits?.nat ?? []) parts.push(`${line}\n`);
  for (const c of stale) parts.push(`-X ${c}\n`);
  parts.push("COMMIT\n");
  return parts;
}

/**
 * Everything in a sync that is not a rewritten Service's own chains: the filter table, nat's
 * top-level chains with the capture rules, the stale-chain deletions and the nodeport tail.
 */
export function topLevelTransaction(result: RenderResult): string {
  const stale = result.nat.deletedChains;
  const lines = [
    "*filter",
    ...result.filter.chainLines,
    ...result.filter.ruleLines,
    "COMMIT",
    "*nat",
    ...result.nat.topChainLines,
    ...stale.map((c) => `:${c} - [0:0]`),
    ...result.nat.fixedRuleLines,
    ...result.nat.captureRuleLines,
    ...stale.map((c) => `-X ${c}`),
    ...result.nat.tailRuleLines,
    "COMMIT",
  ];
  return lines.join("\n") + "\n";
}
