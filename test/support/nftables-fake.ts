/**
 * A stateful stand-in for the kernel's `table ip|ip6 kube-proxy` (in the spirit of knftables'
 * `Fake`): it applies `nft -f` text command by command on a copy and commits only when every
 * command succeeded, so it is atomic like the kernel. It checks what the kernel checks for the
 * commands our writer sends: objects must exist before they are used, flushed or deleted, a chain
 * or set still referenced cannot be deleted, an element that is not there cannot be deleted, and
 * a base chain cannot change its hook. `dump()` prints the table the way knftables' fake does.
 */
import type { TableDump } from "../../src/backends/nftables/netlink/decode.ts";
import { ruleKey } from "../../src/backends/nftables/netlink/decode.ts";
import { compileRule, type IfIndexResolver } from "../../src/backends/nftables/netlink/rule.ts";

export class FakeNftError extends Error {
  readonly code = "KPT_TEST_FAKE_NFT";

  constructor(
    readonly line: number,
    readonly command: string,
    reason: string,
  ) {
    super(`line ${line}: ${reason}: ${command}`);
  }
}

interface Chain {
  spec: string;
  rules: string[];
}

interface Container {
  kind: "set" | "map";
  spec: string;
  /** key → whole element text inside the braces. */
  elements: Map<string, string>;
}

interface Table {
  spec: string;
  chains: Map<string, Chain>;
  containers: Map<string, Container>;
}

/** The key of an element text: what comes before its comment or its value. */
export function elementKey(text: string): string {
  const cut = [text.indexOf(' comment "'), text.indexOf(" : ")].filter((i) => i >= 0);
  return cut.length === 0 ? text.trim() : text.slice(0, Math.min(...cut)).trim();
}

const chainRefs = (text: string): string[] =>
  [...text.matchAll(/\b(?:jump|goto) ([A-Za-z0-9_./-]+)/g)].map((m) => m[1]!);
const setRefs = (text: string): string[] => [...text.matchAll(/@([A-Za-z0-9_./-]+)/g)].map((m) => m[1]!);

function clone(table: Table | null): Table | null {
  if (table === null) return null;
  return {
    spec: table.spec,
    chains: new Map([...table.chains].map(([n, c]) => [n, { spec: c.spec, rules: [...c.rules] }])),
    containers: new Map(
      [...table.containers].map(([n, c]) => [
        n,
        { kind: c.kind, spec: c.spec, elements: new Map(c.elements) },
      ]),
    ),
  };
}

const hookOf = (spec: string): string => /type \S+ hook \S+ priority \S+/.exec(spec)?.[0] ?? "";

export class FakeNft {
  private tables = new Map<string, Table | null>();
  /** Commands of every accepted transaction, in order. */
  readonly transactions: string[][] = [];

  /** Applies one `nft -f` payload atomically; throws `FakeNftError` and changes nothing on failure. */
  apply(payload: string): void {
    const working = new Map([...this.tables].map(([k, t]) => [k, clone(t)]));
    const commands = payload.split("\n").filter((l) => l.trim() !== "");
    commands.forEach((command, i) => this.run(working, command, i + 1));
    this.tables = working;
    this.transactions.push(commands);
  }

  /**
   * One family's table as a netlink read of the kernel would decode it: each rule through the
   * netlink writer's compiler (what the kernel would hold), elements parsed from their text.
   */
  tableDump(family: "ip" | "ip6", name: string, ifIndex: IfIndexResolver = () => 1): TableDump {
    const table = this.tables.get(`${family} ${name}`) ?? null;
    const otherTables = [...this.tables]
      .filter(([k, t]) => t !== null && k.startsWith(`${family} `) && k !== `${family} ${name}`)
      .map(([k]) => k.slice(family.length + 1))
      .sort();
    if (table === null) return { exists: false, comment: null, otherTables, chains: [], sets: [] };
    const comment = (spec: string): string | undefined => /comment "([^"]*)"/.exec(spec)?.[1];
    return {
      exists: true,
      comment: comment(table.spec) ?? null,
      otherTables,
      chains: [...table.chains].map(([n, c]) => {
        const hook = /type (\S+) hook (\S+) priority (-?\d+)/.exec(c.spec);
        const chainComment = comment(c.spec);
        return {
          name: n,
          ...(hook === null ? {} : { hook: { type: hook[1]!, hook: hook[2]!, priority: Number(hook[3]) } }),
          ...(chainComment === undefined ? {} : { comment: chainComment }),
          rules: c.rules.map((r) => ruleKey(compileRule(n, r, family, ifIndex))),
        };
      }),
      sets: [...table.containers].map(([n, c]) => ({
        name: n,
        kind: c.kind,
        type: /type ([^;]+?) ;/.exec(c.spec)?.[1] ?? null,
        elements: n.startsWith("affinity-")
          ? null
          : [...c.elements.values()].map((text) => {
              const value = / : (.*)$/.exec(text)?.[1];
              const elementComment = / comment "([^"]*)"/.exec(text)?.[1];
              return {
                container: n,
                key: elementKey(text),
                ...(elementComment === undefined ? {} : { comment: elementComment }),
                ...(value === undefined ? {} : { value }),
              };
            }),
      })),
    };
  }

  /** Someone else removes the table (an outside `nft delete table`). */
  deleteTable(family: string, name: string): void {
    this.tables.delete(`${family} ${name}`);
  }

  /** The table as knftables' fake `Dump()` writes it: objects, then rules, then elements. */
  dump(family: string, name: string): string {
    const table = this.tables.get(`${family} ${name}`);
    if (table === undefined || table === null) return "";
    const p = `${family} ${name}`;
    const lines = [`add table ${p}${table.spec === "" ? "" : ` ${table.spec}`}`];
    for (const [n, c] of table.containers) lines.push(`add ${c.kind} ${p} ${n} ${c.spec}`);
    for (const [n, c] of table.chains) lines.push(`add chain ${p} ${n}${c.spec === "" ? "" : ` ${c.spec}`}`);
    for (const [n, c] of table.chains) for (const r of c.rules) lines.push(`add rule ${p} ${n} ${r}`);
    for (const [n, c] of table.containers)
      for (const e of c.elements.values()) lines.push(`add element ${p} ${n} { ${e} }`);
    return lines.join("\n") + "\n";
  }

  private run(tables: Map<string, Table | null>, command: string, line: number): void {
    const fail = (reason: string): never => {
      throw new FakeNftError(line, command, reason);
    };
    const m = /^(add|delete|flush) (table|chain|set|map|rule|element) (ip|ip6) (\S+)(?: (.*))?$/.exec(
      command.trim(),
    );
    if (m === null) return fail("not a command this fake knows");
    const [, verb, what, family, tableName, rest = ""] = m as unknown as [
      string,
      string,
      string,
      string,
      string,
      string?,
    ];
    const key = `${family} ${tableName}`;
    if (what === "table") {
      if (verb === "add") {
        const existing = tables.get(key);
        if (existing === undefined || existing === null)
          tables.set(key, { spec: rest, chains: new Map(), containers: new Map() });
        else if (rest !== "") existing.spec = rest;
      } else if (verb === "delete") {
        if (!tables.get(key)) fail("no such table");
        tables.delete(key);
      } else fail("flush table is not used");
      return;
    }
    const table = tables.get(key) ?? fail("no such table");
    const nameMatch = /^(\S+)(?: (.*))?$/.exec(rest) ?? fail("missing name");
    const objName = nameMatch[1]!;
    const tail = nameMatch[2] ?? "";
    const referencedChain = (chain: string): boolean => {
      for (const [n, c] of table.chains)
        if (n !== chain && c.rules.some((r) => chainRefs(r).includes(chain))) return true;
      for (const c of table.containers.values())
        for (const e of c.elements.values()) if (chainRefs(e).includes(chain)) return true;
      return false;
    };
    switch (what) {
      case "chain": {
        const chain = table.chains.get(objName);
        if (verb === "add") {
          if (chain === undefined) table.chains.set(objName, { spec: tail, rules: [] });
          else if (hookOf(chain.spec) !== hookOf(tail) && tail !== "")
            fail("cannot change a base chain's hook");
        } else if (verb === "flush") {
          (chain ?? fail("no such chain")).rules = [];
        } else {
          if (chain === undefined) fail("no such chain");
          if (referencedChain(objName)) fail("chain is still referenced");
          table.chains.delete(objName);
        }
        return;
      }
      case "set":
      case "map": {
        const c = table.containers.get(objName);
        if (verb === "add") {
          if (c === undefined) table.containers.set(objName, { kind: what, spec: tail, elements: new Map() });
          else if (c.spec !== tail) fail(`cannot change a ${what}'s declaration`);
        } else if (verb === "flush") {
          (c ?? fail(`no such ${what}`)).elements.clear();
        } else {
          if (c === undefined) fail(`no such ${what}`);
          for (const ch of table.chains.values())
            if (ch.rules.some((r) => setRefs(r).includes(objName))) fail(`${what} is still referenced`);
          table.containers.delete(objName);
        }
        return;
      }
      case "rule": {
        if (verb !== "add") fail("only add rule is used");
        const chain = table.chains.get(objName) ?? fail("no such chain");
        for (const ref of chainRefs(tail)) if (!table.chains.has(ref)) fail(`jump to missing chain ${ref}`);
        for (const ref of setRefs(tail)) if (!table.containers.has(ref)) fail(`missing set ${ref}`);
        chain.rules.push(tail);
        return;
      }
      case "element": {
        const c = table.containers.get(objName) ?? fail("no such set or map");
        const body = /^\{ (.*) \}$/.exec(tail)?.[1] ?? fail("element not in braces");
        const k = elementKey(body);
        if (verb === "add") {
          for (const ref of chainRefs(body))
            if (!table.chains.has(ref)) fail(`verdict to missing chain ${ref}`);
          const existing = c.elements.get(k);
          if (existing === undefined) c.elements.set(k, body);
          else if (existing !== body) fail("element exists with another value");
        } else if (verb === "delete") {
          if (!c.elements.delete(k)) fail("no such element");
        } else fail("flush element is not a command");
        return;
      }
    }
  }
}
