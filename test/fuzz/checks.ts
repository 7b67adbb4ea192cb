/**
 * Injection checks of rendered rule text: every iptables-restore line must be one of the forms
 * the renderer writes, every token of a rule a known flag with a well-formed value or a quoted
 * `--comment`; every nft command must start as the writer's commands do, carry quoted text only
 * as `comment "..."`, and every other token must be a plain one. Input strings with a space, a
 * quote or a line break must not appear outside comments.
 */
import { isIP } from "node:net";

/** iptables' XT_MAX_COMMENT_LEN is 256 with the NUL. */
const IPT_MAX_COMMENT = 255;
/** nft's NFTNL_UDATA_COMMENT_MAXLEN. */
export const NFT_MAX_COMMENT = 128;

const CHAIN = /^[A-Z0-9][A-Z0-9_-]{0,28}$/;
const TARGETS = new Set(["ACCEPT", "DROP", "REJECT", "RETURN", "MARK", "MASQUERADE", "DNAT"]);
const MODULES = new Set([
  "comment",
  "tcp",
  "udp",
  "sctp",
  "recent",
  "statistic",
  "mark",
  "addrtype",
  "conntrack",
  "nfacct",
]);
const PLAIN = /^[A-Za-z0-9._:/[\]+-]+$/;

function isAddrOrCIDR(v: string): boolean {
  const slash = v.indexOf("/");
  if (slash < 0) return isIP(v) !== 0;
  const ip = v.slice(0, slash);
  const len = v.slice(slash + 1);
  const fam = isIP(ip);
  if (fam === 0 || !/^(0|[1-9]\d{0,2})$/.test(len)) return false;
  return Number(len) <= (fam === 4 ? 32 : 128);
}

function isPort(v: string): boolean {
  return /^[1-9]\d{0,4}$/.test(v) && Number(v) <= 65535;
}

function isHostPort(v: string): boolean {
  const m = /^(?:\[([0-9a-f:.]+)\]|(\d+\.\d+\.\d+\.\d+)):(\d+)$/.exec(v);
  if (m === null) return false;
  const ip = m[1] ?? m[2] ?? "";
  return isIP(ip) === (m[1] !== undefined ? 6 : 4) && isPort(m[3] ?? "");
}

const FLAG_VALUES: Record<string, ((v: string) => boolean) | null> = {
  "-m": (v) => MODULES.has(v),
  "-p": (v) => v === "tcp" || v === "udp" || v === "sctp",
  "-d": isAddrOrCIDR,
  "-s": isAddrOrCIDR,
  "--dport": isPort,
  "-j": (v) => TARGETS.has(v) || CHAIN.test(v),
  "--to-destination": isHostPort,
  "--name": (v) => CHAIN.test(v),
  "--seconds": (v) => /^[1-9]\d{0,5}$/.test(v),
  "--mode": (v) => v === "random",
  "--probability": (v) => /^0\.\d{10}$/.test(v),
  "--dst-type": (v) => v === "LOCAL",
  "--src-type": (v) => v === "LOCAL",
  "--mark": (v) => /^0x[0-9a-f]+\/0x[0-9a-f]+$/.test(v),
  "--xor-mark": (v) => /^0x[0-9a-f]+$/.test(v),
  "--or-mark": (v) => /^0x[0-9a-f]+$/.test(v),
  "--ctstate": (v) => /^[A-Z]+(,[A-Z]+)*$/.test(v),
  "--nfacct-name": (v) => /^[a-z_]+$/.test(v),
  "-i": (v) => /^[A-Za-z0-9._-]{1,15}\+?$/.test(v),
  "--rcheck": null,
  "--reap": null,
  "--set": null,
  "--random-fully": null,
};

const TARGET_OPTIONS = new Set(["--to-destination", "--xor-mark", "--or-mark", "--random-fully"]);

/** A line's tokens; quoted ones keep their quotes. null when a quote is not closed. */
function tokenize(line: string): string[] | null {
  const out: string[] = [];
  let i = 0;
  while (i < line.length) {
    if (line[i] === " ") {
      i++;
      continue;
    }
    if (line[i] === '"') {
      const end = line.indexOf('"', i + 1);
      if (end < 0) return null;
      if (end + 1 < line.length && line[end + 1] !== " ") return null;
      out.push(line.slice(i, end + 1));
      i = end + 1;
      continue;
    }
    let end = line.indexOf(" ", i);
    if (end < 0) end = line.length;
    out.push(line.slice(i, end));
    i = end;
  }
  return out;
}

function commentProblem(text: string, max: number): string | null {
  if (/["\\\n\r\0]/.test(text)) return "comment holds a quote, backslash or line break";
  if (Buffer.byteLength(text) > max) return `comment of ${Buffer.byteLength(text)} bytes, over ${max}`;
  return null;
}

/** Problems of one iptables-restore line; empty when it is well formed. */
export function iptablesLineProblems(line: string): string[] {
  if (line === "*filter" || line === "*nat" || line === "COMMIT") return [];
  let m = /^:([^ ]+) - \[0:0\]$/.exec(line);
  if (m !== null) return CHAIN.test(m[1]!) ? [] : [`bad chain name in ${JSON.stringify(line)}`];
  m = /^-X ([^ ]+)$/.exec(line);
  if (m !== null) return CHAIN.test(m[1]!) ? [] : [`bad chain name in ${JSON.stringify(line)}`];
  const tokens = tokenize(line);
  if (tokens === null) return [`unbalanced quote in ${JSON.stringify(line)}`];
  if (tokens[0] !== "-A" || tokens[1] === undefined || !CHAIN.test(tokens[1]))
    return [`unknown line ${JSON.stringify(line.slice(0, 200))}`];
  const problems: string[] = [];
  let jumped = false;
  for (let i = 2; i < tokens.length; i++) {
    const t = tokens[i]!;
    // Only the target's own options follow the target.
    if (jumped && !TARGET_OPTIONS.has(t)) {
      problems.push(`${JSON.stringify(t)} after the target in ${JSON.stringify(line.slice(0, 300))}`);
      break;
    }
    if (t === "-j") jumped = true;
    if (t === "!") continue;
    if (t === "--comment") {
      const v = tokens[++i];
      if (v === undefined) problems.push("--comment without a value");
      else {
        const text = v.startsWith('"') ? v.slice(1, -1) : v;
        if (!v.startsWith('"') && !PLAIN.test(v)) problems.push(`bare comment ${JSON.stringify(v)}`);
        const p = commentProblem(text, IPT_MAX_COMMENT);
        if (p !== null) problems.push(`${p}: ${JSON.stringify(line.slice(0, 300))}`);
      }
      continue;
    }
    if (t.startsWith('"')) {
      problems.push(`quoted token outside --comment: ${JSON.stringify(line.slice(0, 300))}`);
      continue;
    }
    if (!(t in FLAG_VALUES)) {
      problems.push(`unknown token ${JSON.stringify(t)} in ${JSON.stringify(line.slice(0, 300))}`);
      continue;
    }
    const check = FLAG_VALUES[t];
    if (check === null || check === undefined) continue;
    const v = tokens[++i];
    if (v === undefined || !check(v))
      problems.push(`bad value ${JSON.stringify(v)} of ${t} in ${JSON.stringify(line.slice(0, 300))}`);
  }
  return problems;
}

const NFT_LINE = /^(add|flush|delete) (table|chain|rule|set|map|element) (ip|ip6) kube-proxy( |$)/;
const NFT_TOKEN = /^(?:[A-Za-z0-9._:/[\]+*@,-]+|!=|==|\{|\}|;|:)$/;

/** Problems of one nft command line; empty when it is well formed. */
export function nftLineProblems(line: string): string[] {
  if (!NFT_LINE.test(line)) return [`unknown command ${JSON.stringify(line.slice(0, 200))}`];
  const tokens = tokenize(line);
  if (tokens === null) return [`unbalanced quote in ${JSON.stringify(line.slice(0, 300))}`];
  const problems: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t.startsWith('"')) {
      if (tokens[i - 1] !== "comment")
        problems.push(`quoted token outside comment: ${JSON.stringify(line.slice(0, 300))}`);
      const p = commentProblem(t.slice(1, -1), NFT_MAX_COMMENT);
      if (p !== null) problems.push(`${p}: ${JSON.stringify(line.slice(0, 300))}`);
      continue;
    }
    if (!NFT_TOKEN.test(t))
      problems.push(`unsafe token ${JSON.stringify(t)} in ${JSON.stringify(line.slice(0, 300))}`);
  }
  return problems;
}

/** The text with every double-quoted stretch removed (what is not a comment). */
export function outsideQuotes(text: string): string {
  return text.replace(/"[^"\n]*"/g, '""');
}

/** The strings of an input tree that would change a rule's meaning if they reached it unquoted. */
export function dangerousStrings(root: unknown): string[] {
  const out = new Set<string>();
  const seen = new Set<unknown>();
  const walk = (v: unknown, depth: number): void => {
    if (depth > 50) return;
    if (typeof v === "string") {
      if (v.length >= 3 && /[\s"'\\{};#]/.test(v)) out.add(v);
      return;
    }
    if (typeof v !== "object" || v === null || seen.has(v)) return;
    seen.add(v);
    if (Array.isArray(v)) for (const x of v) walk(x, depth + 1);
    else
      for (const [k, x] of Object.entries(v)) {
        walk(k, depth + 1);
        walk(x, depth + 1);
      }
  };
  walk(root, 0);
  return [...out];
}

/** Input strings found in the rule text outside its quoted comments. */
export function leakedStrings(text: string, inputs: readonly string[]): string[] {
  if (inputs.length === 0) return [];
  const outside = outsideQuotes(text);
  return inputs.filter((s) => {
    const trimmed = s.trim();
    if (trimmed.length < 3 || !outside.includes(trimmed)) return false;
    // A flag and one plain value ("-j ACCEPT") is text the renderer writes itself; it only
    // matters as part of a longer string, which is checked on its own.
    if (/^-{1,2}[a-z-]+ [A-Za-z0-9._:/-]+$/.test(trimmed)) return false;
    return /[\s"'\\{};#]/.test(trimmed);
  });
}
