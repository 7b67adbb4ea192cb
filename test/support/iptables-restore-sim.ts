/**
 * A tiny in-memory model of the kernel's iptables tables, enough to replay
 * `iptables-restore --noflush` the way upstream's fake iptables does: `:chain` creates or flushes,
 * `-A` appends, `-X` deletes an existing, unreferenced chain, and a failing document changes
 * nothing (the restore is atomic per call).
 */

type Tables = Map<string, Map<string, string[]>>;

const TARGET_RE = /(?:^|\s)-j\s+(\S+)/;

export class RestoreSimError extends Error {
  readonly code = "KPT_TEST_RESTORE_SIM";
}

function cloneTables(tables: Tables): Tables {
  const copy: Tables = new Map();
  for (const [name, chains] of tables) {
    copy.set(name, new Map([...chains].map(([c, rules]) => [c, [...rules]])));
  }
  return copy;
}

export class SimulatedIptables {
  private tables: Tables = new Map();

  /** Chains present in `table`, in creation order. */
  chains(table: string): string[] {
    return [...(this.tables.get(table)?.keys() ?? [])];
  }

  rules(table: string, chain: string): readonly string[] {
    return this.tables.get(table)?.get(chain) ?? [];
  }

  /** Append a rule outside of any restore (like `iptables -A`), creating the chain if needed. */
  appendRule(table: string, ruleLine: string): void {
    const m = /^-A (\S+) (.*)$/.exec(ruleLine);
    if (m === null) throw new RestoreSimError(`not a rule: ${ruleLine}`);
    const chains = this.tableOf(this.tables, table);
    const chain = m[1] ?? "";
    const rules = chains.get(chain) ?? [];
    rules.push(ruleLine);
    chains.set(chain, rules);
  }

  /** Apply an iptables-restore --noflush document; throws (leaving state untouched) on error. */
  restore(payload: string): void {
    const next = cloneTables(this.tables);
    let current: Map<string, string[]> | null = null;
    let lineNo = 0;
    for (const raw of payload.split("\n")) {
      lineNo++;
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) continue;
      const fail = (why: string): never => {
        throw new RestoreSimError(`line ${lineNo} failed (${why}): ${line}`);
      };
      if (current === null) {
        if (!line.startsWith("*")) fail("expected a table");
        current = this.tableOf(next, line.slice(1));
        continue;
      }
      if (line === "COMMIT") {
        current = null;
        continue;
      }
      if (line.startsWith(":")) {
        const name = line.slice(1).split(" ")[0] ?? "";
        current.set(name, []);
        continue;
      }
      const append = /^-A (\S+) (.*)$/.exec(line);
      if (append !== null) {
        const rules = current.get(append[1] ?? "");
        if (rules === undefined) return fail("no such chain");
        const target = TARGET_RE.exec(line)?.[1];
        if (target !== undefined && /^[A-Z]+-/.test(target) && !current.has(target)) {
          fail(`jump to missing chain ${target}`);
        }
        rules.push(line);
        continue;
      }
      const del = /^-X (\S+)$/.exec(line);
      if (del !== null) {
        const chain = del[1] ?? "";
        if (!current.has(chain)) fail("no such chain");
        for (const rules of current.values()) {
          if (rules.some((r) => TARGET_RE.exec(r)?.[1] === chain)) fail("chain is still referenced");
        }
        if ((current.get(chain) ?? []).length > 0) fail("chain is not empty");
        current.delete(chain);
        continue;
      }
      fail("unknown command");
    }
    if (current !== null) throw new RestoreSimError("missing COMMIT");
    this.tables = next;
  }

  private tableOf(tables: Tables, name: string): Map<string, string[]> {
    let t = tables.get(name);
    if (t === undefined) {
      t = new Map();
      tables.set(name, t);
    }
    return t;
  }
}
