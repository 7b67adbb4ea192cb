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
 * a failure or a flush). When the fixed parts are unchanged, the capture rules of KUBE-SERVICES,
 * KUBE-NODEPORTS and the filter chains are edited in place instead of rewritten: `-D` for rules
 * that went away, `-I CHAIN 1` for new ones (above the nodeport tail, which must stay last; the
 * per-Service capture rules never overlap, so their order does not matter). On a 10,000-Service
 * node a change then costs its own rules, not a rewrite of 10,000 capture rules; the kernel holds
 * the same rules as after upstream's partial sync. Too many edits fall back to the rewrite.
 */
import type { RestorePayload } from "../../kernel/iptables.ts";
import { KUBE_MARK_MASQ } from "./chains.ts";
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

/** The top level a sync leaves in the kernel, in the form the next sync's writer compares. */
export interface WrittenTopLevel {
  /** Chain declarations, fixed rules and the nodeport tail: any change means a rewrite. */
  readonly fixed: string;
  /** Per-Service rules of the filter table, as `-A …` lines. */
  readonly filter: ReadonlySet<string>;
  /** Capture rules of nat KUBE-SERVICES / KUBE-NODEPORTS, as `-A …` lines. */
  readonly nat: ReadonlySet<string>;
}

const FIXED_FILTER_CHAINS = ["-A KUBE-FORWARD ", "-A KUBE-FIREWALL "];

export function writtenTopLevel(result: RenderResult): WrittenTopLevel {
  const fixedFilter: string[] = [];
  const filter = new Set<string>();
  for (const line of result.filter.ruleLines) {
    if (FIXED_FILTER_CHAINS.some((p) => line.startsWith(p))) fixedFilter.push(line);
    else filter.add(line);
  }
  const fixed = [
    ...result.filter.chainLines,
    ...fixedFilter,
    ...result.nat.topChainLines,
    ...result.nat.fixedRuleLines,
    ...result.nat.tailRuleLines,
  ].join("\n");
  return { fixed, filter, nat: new Set(result.nat.captureRuleLines) };
}

interface TopLevelEdits {
  readonly filter: readonly string[];
  readonly nat: readonly string[];
}

/** `-D`/`-I` lines turning `previous` into `next`, or null when a rewrite is needed. */
function topLevelEdits(previous: WrittenTopLevel, next: WrittenTopLevel): TopLevelEdits | null {
  if (previous.fixed !== next.fixed) return null;
  const edit = (before: ReadonlySet<string>, after: ReadonlySet<string>): string[] => {
    const out: string[] = [];
    for (const line of after) if (!before.has(line)) out.push(line.replace(/^-A (\S+) /, "-I $1 1 "));
    for (const line of before) if (!after.has(line)) out.push(line.replace(/^-A /, "-D "));
    return out;
  };
  const filter = edit(previous.filter, next.filter);
  const nat = edit(previous.nat, next.nat);
  return filter.length + nat.length > MAX_RULE_EDITS ? null : { filter, nat };
}

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
  parts.push(`*nat\n:${KUBE_MARK_MASQ} - [0:0]\n`);
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
