/**
 * ipset through the `ipset` tool, with argv arrays: `ipset save` to read (`ipset list`, the
 * human-readable listing, is parsed too: dumps may hold either), `ipset -exist restore` with the
 * commands on stdin to write (one process per sync instead of one per entry, as upstream's
 * per-entry `ipset add`), `ipset destroy` for clean-up.
 */
import { ExecError, toolRunner, type ExecResult, type Runner } from "./exec.ts";

export interface IpsetSaved {
  readonly name: string;
  readonly type: string;
  /** The rest of the `create` line (family, hashsize, range…). */
  readonly options: string;
  /** The elements, without their extensions (`timeout`, `comment`, counters, `nomatch`). */
  readonly entries: readonly string[];
  /** The elements of `entries` flagged `nomatch` (net types: such a prefix is an exception). */
  readonly nomatch: readonly string[];
}

type SetDraft = { type: string; options: string; entries: string[]; nomatch: string[] };

/** One element with its extensions (`10.0.0.0/8 nomatch`, `30080 comment "x"`) into the draft. */
function addElement(set: SetDraft | undefined, fields: readonly string[]): void {
  const element = fields[0];
  if (set === undefined || element === undefined || element === "") return;
  set.entries.push(element);
  if (fields.slice(1).includes("nomatch")) set.nomatch.push(element);
}

/** Parses `ipset save` output into its sets, in order. */
export function parseIpsetSave(text: string): IpsetSaved[] {
  const sets = new Map<string, SetDraft>();
  for (const raw of text.split("\n")) {
    const fields = raw.trim().split(/\s+/);
    if (fields[0] === "create" && fields[1] !== undefined && fields[2] !== undefined) {
      sets.set(fields[1], { type: fields[2], options: fields.slice(3).join(" "), entries: [], nomatch: [] });
    } else if (fields[0] === "add" && fields[1] !== undefined) {
      addElement(sets.get(fields[1]), fields.slice(2));
    }
  }
  return [...sets].map(([name, s]) => ({ name, ...s }));
}

/**
 * Parses `ipset list` output: per set a `Name:` line, `Type:`, `Header:` (the create options, as
 * `ipset save` prints them after the type), more header lines, then `Members:` and one element a
 * line up to a blank line or the next `Name:`.
 */
export function parseIpsetList(text: string): IpsetSaved[] {
  const sets: (SetDraft & { name: string })[] = [];
  let current: (SetDraft & { name: string }) | undefined;
  let members = false;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const name = /^Name:\s*(\S+)$/.exec(line)?.[1];
    if (name !== undefined) {
      current = { name, type: "", options: "", entries: [], nomatch: [] };
      sets.push(current);
      members = false;
    } else if (current === undefined || line === "") {
      members = false;
    } else if (members) {
      addElement(current, line.split(/\s+/));
    } else if (line === "Members:") {
      members = true;
    } else {
      const header = /^(Type|Header):\s*(.*)$/.exec(line);
      if (header?.[1] === "Type") current.type = header[2]!.trim();
      else if (header?.[1] === "Header") current.options = header[2]!.trim();
    }
  }
  return sets.filter((s) => s.type !== "");
}

/** `ipset v7.17, protocol version: 7` → [7, 17]. */
export function parseIpsetVersion(text: string): [number, number] | null {
  const m = /v(\d+)\.(\d+)/.exec(text);
  return m === null ? null : [Number(m[1]), Number(m[2])];
}

export class Ipset {
  private readonly run: (argv: readonly string[], stdin?: string) => Promise<ExecResult>;

  constructor(runner: Runner, netns?: string) {
    this.run = toolRunner(runner, netns);
  }

  async version(): Promise<string> {
    return (await this.run(["ipset", "version"])).stdout.trim();
  }

  async save(): Promise<IpsetSaved[]> {
    return parseIpsetSave(await this.saveText());
  }

  /** `ipset save` as the tool prints it (the see-inside tools keep the text for their dumps). */
  async saveText(): Promise<string> {
    return (await this.run(["ipset", "save"])).stdout;
  }

  /** Feeds `ipset -exist restore`: creating an existing set or adding a present entry is no error. */
  async restore(lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return;
    await this.run(["ipset", "-exist", "restore"], lines.join("\n") + "\n");
  }

  /** Destroys one set; resolves false when it did not exist. */
  async destroy(name: string): Promise<boolean> {
    try {
      await this.run(["ipset", "destroy", name]);
      return true;
    } catch (err) {
      if (err instanceof ExecError && /does not exist/.test(err.stderr)) return false;
      throw err;
    }
  }
}
