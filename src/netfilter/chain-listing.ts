/**
 * One Service's part of the live iptables rules, read chain by chain (`iptables -t T -S CHAIN
 * -v`) instead of `iptables-save -c` of everything (pure). At 10,000 Services the save is
 * seconds of the kernel's and the tool's work; a chain is milliseconds, and the capture chains
 * (KUBE-SERVICES, KUBE-NODEPORTS…) are the only large ones. Which chains to read next comes
 * from the ones read: every target of a built-in or fixed chain, of the Service's own chains,
 * and of the capture chains' rules that name the Service. The listings become the
 * `iptables-save -c` text of those chains, which ./slice.ts then cuts as it cuts a whole dump.
 */

/** The capture chains: one rule per Service port (and more), most of a large node's rules. */
const CAPTURE_CHAINS = new Set([
  "KUBE-SERVICES",
  "KUBE-NODEPORTS",
  "KUBE-EXTERNAL-SERVICES",
  "KUBE-PROXY-FIREWALL",
]);

/** The built-in chains a Service's packets pass, per table (where every walk starts). */
export const BUILT_IN_CHAINS: Readonly<Record<"filter" | "nat", readonly string[]>> = {
  filter: ["INPUT", "FORWARD", "OUTPUT"],
  nat: ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
};

const TARGET = /\s-[jg]\s+(\S+)/;
const STANDARD = new Set(["ACCEPT", "DROP", "RETURN", "REJECT", "DNAT", "SNAT", "MASQUERADE", "MARK", "LOG"]);

/** True when the rule line names `namespace/name` as a whole word (`ns/name:port`, `"ns/name …`). */
function namesService(line: string, needle: string): boolean {
  for (let at = line.indexOf(needle); at >= 0; at = line.indexOf(needle, at + 1)) {
    const next = line.charCodeAt(at + needle.length);
    const before = line.charCodeAt(at - 1);
    // ':' ' ' '"' or the end after it; ' ' or '"' before it
    if ((before === 32 || before === 34) && (Number.isNaN(next) || next === 58 || next === 32 || next === 34))
      return true;
  }
  return false;
}

/** The chains a listed chain sends `namespace/name`'s packets to (user chains only). */
export function chainsToFollow(chain: string, listing: string, namespace: string, name: string): string[] {
  const needle = `${namespace}/${name}`;
  const capture = CAPTURE_CHAINS.has(chain);
  const out = new Set<string>();
  for (const line of listing.split("\n")) {
    if (!line.startsWith("-A ")) continue;
    if (capture && !namesService(line, needle)) continue;
    const target = TARGET.exec(line)?.[1];
    if (target !== undefined && !STANDARD.has(target)) out.add(target);
  }
  return [...out];
}

/** `-A CHAIN … -c 12 3400 -j X` → `[12:3400] -A CHAIN … -j X`, as iptables-save -c prints it. */
function savedRule(line: string): string {
  const m = / -c (\d+) (\d+)(?= |$)/.exec(line);
  if (m === null) return line;
  return `[${m[1]}:${m[2]}] ${line.slice(0, m.index)}${line.slice(m.index + m[0].length)}`;
}

/**
 * The `iptables-save -c` text of the chains listed, table by table, in the order given: the
 * chain declarations (`:INPUT ACCEPT [p:b]`, `:KUBE-SVC-… - [0:0]`), then every rule, then COMMIT.
 */
export function saveFromListings(
  tables: readonly {
    readonly table: string;
    readonly chains: readonly { chain: string; listing: string }[];
  }[],
): string {
  const out: string[] = [];
  for (const { table, chains } of tables) {
    if (chains.length === 0) continue;
    out.push(`*${table}`);
    const rules: string[] = [];
    for (const { chain, listing } of chains) {
      let declared = false;
      for (const line of listing.split("\n")) {
        const policy = /^-P (\S+) (\S+)(?: -c (\d+) (\d+))?$/.exec(line);
        if (policy !== null) {
          out.push(`:${policy[1]} ${policy[2]} [${policy[3] ?? 0}:${policy[4] ?? 0}]`);
          declared = true;
        } else if (line.startsWith("-N ")) {
          out.push(`:${line.slice(3).trim()} - [0:0]`);
          declared = true;
        } else if (line.startsWith("-A ")) rules.push(savedRule(line));
      }
      if (!declared) out.push(`:${chain} - [0:0]`);
    }
    out.push(...rules, "COMMIT");
  }
  return out.join("\n") + "\n";
}
