/**
 * ipset through the `ipset` tool, with argv arrays: `ipset save` to read, `ipset -exist restore`
 * with the commands on stdin to write (one process per sync instead of one per entry, as
 * upstream's per-entry `ipset add`), `ipset destroy` for clean-up.
 */
import { ExecError, toolRunner, type ExecResult, type Runner } from "./exec.ts";

export interface IpsetSaved {
  readonly name: string;
  readonly type: string;
  /** The rest of the `create` line (family, hashsize, range…). */
  readonly options: string;
  readonly entries: readonly string[];
}

/** Parses `ipset save` output into its sets, in order. */
export function parseIpsetSave(text: string): IpsetSaved[] {
  const sets = new Map<string, { type: string; options: string; entries: string[] }>();
  for (const raw of text.split("\n")) {
    const fields = raw.trim().split(/\s+/);
    if (fields[0] === "create" && fields[1] !== undefined && fields[2] !== undefined) {
      sets.set(fields[1], { type: fields[2], options: fields.slice(3).join(" "), entries: [] });
    } else if (fields[0] === "add" && fields[1] !== undefined && fields[2] !== undefined) {
      sets.get(fields[1])?.entries.push(fields[2]);
    }
  }
  return [...sets].map(([name, s]) => ({ name, ...s }));
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
    return parseIpsetSave((await this.run(["ipset", "save"])).stdout);
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
