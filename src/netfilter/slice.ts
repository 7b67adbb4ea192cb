/**
 * One Service's part of an iptables-save dump, cut out of the text without parsing the rest:
 * what `explain` of one Service (and the web view's Service page) needs at 10,000 Services,
 * where the whole dump is 430,000 lines and only a few dozen of them are that Service's.
 */
import type { ParseOptions } from "./iptables-save.ts";

/** The capture chains every Service has rules in: at 10,000 Services they hold most of their lines. */
const CAPTURE_CHAINS = new Set([
  "KUBE-SERVICES",
  "KUBE-NODEPORTS",
  "KUBE-EXTERNAL-SERVICES",
  "KUBE-PROXY-FIREWALL",
]);

/** Chains kube-proxy owns per service port (docs/iptables.md §4.4). */
const PER_SERVICE = /^KUBE-(?:SVC|SVL|SEP|FW|EXT)-/;

/**
 * The start of every line that is neither a rule nor a declaration of a per-Service chain: the
 * regular expression engine skips the 400,000 lines of other Services' chains natively.
 */
const NOT_PER_SERVICE =
  /\n(?!(?:\[\d+:\d+\] )?-A KUBE-(?:SVC|SVL|SEP|FW|EXT)-|:KUBE-(?:SVC|SVL|SEP|FW|EXT)-)/g;

const JUMP = /\s-[jg]\s+(\S+)/;

/** The dump text of the slice, with each line's number in the whole dump and each rule's number in its chain. */
export interface DumpSlice {
  readonly text: string;
  readonly options: Required<Pick<ParseOptions, "lineNumbers" | "ruleNumbers">>;
}

interface Kept {
  /** Offset of the line in the dump. */
  readonly at: number;
  /** Rule number in its chain; 0 for a line that is not a rule. */
  readonly rule: number;
  readonly text: string;
}

/** Where each whole-word occurrence of `needle` starts (`ns/name` followed by `:`, space, `"` or the end). */
function occurrences(text: string, needle: string): number[] {
  const out: number[] = [];
  for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + needle.length)) {
    const next = text.charCodeAt(at + needle.length);
    // ':' ' ' '"' '\n' or the end of the text
    if (Number.isNaN(next) || next === 58 || next === 32 || next === 34 || next === 10) out.push(at);
  }
  return out;
}

function lineEnd(text: string, at: number): number {
  const nl = text.indexOf("\n", at);
  return nl < 0 ? text.length : nl;
}

/** Where the `-A` of a rule line starts (after `[packets:bytes] `), or -1. */
function appendAt(text: string, start: number, end: number): number {
  let at = start;
  if (text.charCodeAt(at) === 91 /* [ */) {
    const close = text.indexOf("] ", at);
    if (close < 0 || close >= end) return -1;
    at = close + 2;
  }
  return text.startsWith("-A ", at) ? at : -1;
}

/** The chain of a rule line, or undefined. */
function chainOf(text: string, start: number, end: number): string | undefined {
  const at = appendAt(text, start, end);
  if (at < 0) return undefined;
  const space = text.indexOf(" ", at + 3);
  return text.slice(at + 3, space < 0 || space > end ? end : space);
}

/**
 * The lines one Service's explanation can need: every table header, COMMIT and fixed chain
 * (built-in, KUBE-POSTROUTING, KUBE-MARK-MASQ, foreign ones), the capture chains' rules that
 * mention `namespace/name`, and the per-Service chains that mention it or are reached from kept
 * rules. Rules keep the line and rule numbers they have in the whole dump. The other Services'
 * chains are never looked at line by line: the lines to read are found by searching the text.
 */
export function sliceServiceDump(text: string, namespace: string, name: string): DumpSlice {
  const occ = occurrences(text, `${namespace}/${name}`);
  const kept: Kept[] = [];
  const wanted = new Set<string>();
  /** Per-Service chains taken, by the offset of their table section's `*table` line. */
  const emitted = new Map<string, number>();
  const sections: number[] = [];
  const wantJump = (line: string): void => {
    const target = JUMP.exec(line)?.[1];
    if (target !== undefined && PER_SERVICE.test(target)) wanted.add(target);
  };
  const sectionOf = (at: number): number => {
    let found = -1;
    for (const s of sections) if (s < at) found = s;
    return found;
  };

  // Every line outside the per-Service chains.
  const captureRules = new Map<string, number>();
  let table = "";
  let k = 0;
  const visit = (start: number): void => {
    const end = lineEnd(text, start);
    const line = text.slice(start, end);
    while (k < occ.length && (occ[k] as number) < start) k++;
    const hit = k < occ.length && (occ[k] as number) < end;
    const chain = chainOf(text, start, end);
    if (chain !== undefined && CAPTURE_CHAINS.has(chain)) {
      const key = `${table} ${chain}`;
      const n = (captureRules.get(key) ?? 0) + 1;
      captureRules.set(key, n);
      if (hit) {
        kept.push({ at: start, rule: n, text: line });
        wantJump(line);
      }
      return;
    }
    if (chain === undefined && line.startsWith("*")) {
      table = line.slice(1).trim();
      sections.push(start);
    }
    // `-X` of another Service's stale chain: that chain is not in the slice.
    if (line.startsWith("-X ") && PER_SERVICE.test(line.slice(3))) return;
    kept.push({ at: start, rule: chain === undefined ? 0 : -1, text: line });
  };
  visit(0);
  NOT_PER_SERVICE.lastIndex = 0;
  for (let m = NOT_PER_SERVICE.exec(text); m !== null; m = NOT_PER_SERVICE.exec(text)) {
    if (m.index + 1 < text.length) visit(m.index + 1);
  }

  // A per-Service chain's rules are contiguous in a dump: from any of its lines, the whole run.
  const takeChainAround = (at: number): void => {
    let start = text.lastIndexOf("\n", at - 1) + 1;
    const chain = chainOf(text, start, lineEnd(text, start));
    if (chain === undefined || !PER_SERVICE.test(chain) || emitted.has(chain)) return;
    for (;;) {
      if (start === 0) break;
      const prev = text.lastIndexOf("\n", start - 2) + 1;
      if (chainOf(text, prev, start - 1) !== chain) break;
      start = prev;
    }
    emitted.set(chain, sectionOf(start));
    for (let p = start, n = 1; p < text.length; n++) {
      const end = lineEnd(text, p);
      if (chainOf(text, p, end) !== chain) break;
      const line = text.slice(p, end);
      kept.push({ at: p, rule: n, text: line });
      wantJump(line);
      p = end + 1;
    }
  };
  const plain = new Set(kept.map((l) => l.at));
  for (const o of occ) {
    const start = text.lastIndexOf("\n", o - 1) + 1;
    if (!plain.has(start)) takeChainAround(start);
  }
  // Chains reached only by jumps (no line of theirs names the Service): searched by name.
  for (let round = 0; round < 8; round++) {
    const missing = [...wanted].filter((c) => !emitted.has(c));
    if (missing.length === 0) break;
    for (const chain of missing) {
      const needle = `-A ${chain} `;
      let found = -1;
      for (let at = text.indexOf(needle); at >= 0 && found < 0; at = text.indexOf(needle, at + 1)) {
        const before = text.charCodeAt(at - 1);
        if (at === 0 || before === 10 || before === 32) found = at;
      }
      if (found >= 0) takeChainAround(found);
      // A chain nothing in the dump defines stays missing; the explanation shows the jump anyway.
      if (!emitted.has(chain)) emitted.set(chain, -1);
    }
  }

  kept.sort((a, b) => a.at - b.at);
  const declared = new Map<number, string[]>();
  for (const [chain, section] of emitted) {
    if (section < 0) continue;
    const list = declared.get(section);
    if (list === undefined) declared.set(section, [chain]);
    else list.push(chain);
  }
  const lines: string[] = [];
  const lineNumbers: number[] = [];
  const ruleNumbers: number[] = [];
  let lineNo = 1;
  let counted = 0;
  for (const l of kept) {
    for (let nl = text.indexOf("\n", counted); nl >= 0 && nl < l.at; nl = text.indexOf("\n", nl + 1)) {
      lineNo++;
      counted = nl + 1;
    }
    lines.push(l.text);
    lineNumbers.push(lineNo);
    ruleNumbers.push(l.rule < 0 ? 0 : l.rule);
    // Each section's per-Service chains are declared right after its `*table` line.
    for (const chain of (declared.get(l.at) ?? []).sort()) {
      lines.push(`:${chain} - [0:0]`);
      lineNumbers.push(lineNo);
      ruleNumbers.push(0);
    }
  }
  return { text: lines.join("\n"), options: { lineNumbers, ruleNumbers } };
}
