/**
 * One Service's part of an iptables-save dump, cut out of the text without parsing the rest:
 * what `explain` of one Service (and the web view's Service page) needs at 10,000 Services,
 * where the whole dump is 430,000 lines and only a few hundred of them are that Service's.
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
const PER_SERVICE = ["KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-FW-", "KUBE-EXT-"];

function isPerService(text: string, at: number): boolean {
  if (!text.startsWith("KUBE-", at)) return false;
  for (const p of PER_SERVICE) if (text.startsWith(p, at)) return true;
  return false;
}

const JUMP = /\s-[jg]\s+(\S+)/;

/** The dump text of the slice, with each line's number in the whole dump and each rule's number in its chain. */
export interface DumpSlice {
  readonly text: string;
  readonly options: Required<Pick<ParseOptions, "lineNumbers" | "ruleNumbers">>;
}

interface Kept {
  readonly line: number;
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

/**
 * The lines one Service's explanation can need: every table header, COMMIT and fixed chain
 * (built-in, KUBE-POSTROUTING, KUBE-MARK-MASQ, foreign ones), the capture chains' rules that
 * mention `namespace/name`, and the per-Service chains that mention it or are reached from kept
 * rules. Rules keep the line and rule numbers they have in the whole dump. One pass over the
 * text; a chain reached only by a jump from a chain seen after it costs one more pass.
 */
export function sliceServiceDump(text: string, namespace: string, name: string): DumpSlice {
  const occ = occurrences(text, `${namespace}/${name}`);
  const kept: Kept[] = [];
  const wanted = new Set<string>();
  const emitted = new Map<string, number>();
  /** Per table section: where its declarations go, and which per-Service chains it holds rules of. */
  const sections: { insertAt: number; chains: Set<string> }[] = [];
  const wantJump = (line: string): void => {
    const target = JUMP.exec(line)?.[1];
    if (target !== undefined && isPerService(target, 0)) wanted.add(target);
  };

  const pass = (only: ReadonlySet<string> | undefined): void => {
    let k = 0;
    let lineNo = 0;
    let section: { insertAt: number; chains: Set<string> } | undefined;
    let sectionIndex = -1;
    const captureRules = new Map<string, number>();
    let table = "";
    // The per-Service chain whose rules are being read: they are contiguous in a dump.
    let block = "";
    let blockStart = 0;
    let blockLine = 0;
    let blockHit = false;
    const endBlock = (end: number): void => {
      if (block === "") return;
      const take = only === undefined ? blockHit || wanted.has(block) : only.has(block);
      if (take && section !== undefined) {
        let n = emitted.get(block) ?? 0;
        let line = blockLine;
        for (let p = blockStart; p < end; line++) {
          const nl = text.indexOf("\n", p);
          const stop = nl < 0 || nl > end ? end : nl;
          const rule = text.slice(p, stop);
          kept.push({ line, rule: ++n, text: rule });
          wantJump(rule);
          p = stop + 1;
        }
        emitted.set(block, n);
        section.chains.add(block);
      }
      block = "";
    };
    for (let p = 0; p <= text.length;) {
      const nl = text.indexOf("\n", p);
      const end = nl < 0 ? text.length : nl;
      lineNo++;
      while (k < occ.length && (occ[k] as number) < p) k++;
      const hit = k < occ.length && (occ[k] as number) < end;
      let at = p;
      if (text.charCodeAt(p) === 91 /* [ */) {
        const close = text.indexOf("] ", p);
        if (close >= 0 && close < end) at = close + 2;
      }
      if (text.startsWith("-A ", at)) {
        const chainAt = at + 3;
        if (isPerService(text, chainAt)) {
          const same =
            block !== "" && text.startsWith(block, chainAt) && text.charCodeAt(chainAt + block.length) === 32;
          if (!same) {
            endBlock(p - 1);
            const space = text.indexOf(" ", chainAt);
            block = text.slice(chainAt, space < 0 || space > end ? end : space);
            blockStart = p;
            blockLine = lineNo;
            blockHit = false;
          }
          if (hit) blockHit = true;
        } else {
          endBlock(p - 1);
          if (only === undefined) {
            const space = text.indexOf(" ", chainAt);
            const chain = text.slice(chainAt, space < 0 || space > end ? end : space);
            if (CAPTURE_CHAINS.has(chain)) {
              const key = `${table} ${chain}`;
              const n = (captureRules.get(key) ?? 0) + 1;
              captureRules.set(key, n);
              if (hit) {
                const line = text.slice(p, end);
                kept.push({ line: lineNo, rule: n, text: line });
                wantJump(line);
              }
            } else kept.push({ line: lineNo, rule: 0, text: text.slice(p, end) });
          }
        }
      } else {
        endBlock(p - 1);
        const c = text.charCodeAt(p);
        if (c === 42 /* * */) {
          sectionIndex++;
          table = text.slice(p + 1, end).trim();
          if (only === undefined) {
            kept.push({ line: lineNo, rule: 0, text: text.slice(p, end) });
            sections.push({ insertAt: lineNo, chains: new Set() });
          }
          section = sections[sectionIndex];
        } else if (only === undefined) {
          const perServiceLine =
            (c === 58 /* : */ && isPerService(text, p + 1)) ||
            (text.startsWith("-X ", p) && isPerService(text, p + 3));
          if (!perServiceLine) kept.push({ line: lineNo, rule: 0, text: text.slice(p, end) });
        }
      }
      if (nl < 0) break;
      p = nl + 1;
    }
    endBlock(text.length);
  };

  pass(undefined);
  for (let round = 0; round < 8; round++) {
    const missing = new Set([...wanted].filter((c) => !emitted.has(c)));
    if (missing.size === 0) break;
    pass(missing);
    // A chain nothing in the dump defines stays missing; the explanation shows the jump anyway.
    for (const c of missing) if (!emitted.has(c)) emitted.set(c, 0);
  }
  kept.sort((a, b) => a.line - b.line);
  // Each section's per-Service chains are declared right after its `*table` line.
  const out: Kept[] = [];
  let s = 0;
  for (const line of kept) {
    out.push(line);
    const section = sections[s];
    if (section !== undefined && line.line === section.insertAt) {
      for (const chain of [...section.chains].sort())
        out.push({ line: line.line, rule: 0, text: `:${chain} - [0:0]` });
      s++;
    }
  }
  return {
    text: out.map((l) => l.text).join("\n"),
    options: { lineNumbers: out.map((l) => l.line), ruleNumbers: out.map((l) => l.rule) },
  };
}
