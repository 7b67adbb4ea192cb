/**
 * IPVS through `ipvsadm`, with argv arrays: the table read with `ipvsadm -Ln --exact` (virtual
 * servers, real servers with weights and connection counts), changes applied as one `ipvsadm -R`
 * batch on stdin, `ipvsadm --set` for the timeouts, `-C` for clean-up. docs/ipvs-mode.md says why
 * ipvsadm and not generic netlink.
 */
import { toolRunner, type ExecResult, type Runner } from "./exec.ts";

export type IpvsProtocol = "TCP" | "UDP" | "SCTP";

export interface IpvsRealServerEntry {
  readonly address: string;
  readonly port: number;
  /** Masq, Local, Route, Tunnel. */
  readonly forward: string;
  readonly weight: number;
  readonly activeConn: number;
  readonly inactiveConn: number;
}

export interface IpvsServiceEntry {
  readonly protocol: IpvsProtocol;
  readonly address: string;
  readonly port: number;
  readonly scheduler: string;
  /** Persistence timeout in seconds; 0 = not persistent. */
  readonly persistence: number;
  readonly schedFlags: readonly string[];
  readonly realServers: readonly IpvsRealServerEntry[];
}

const PROTOCOLS = new Set(["TCP", "UDP", "SCTP"]);

/** `10.0.0.1:80` or `[2001:db8::1]:80` → address and port; null when it is neither. */
export function splitHostPort(text: string): { address: string; port: number } | null {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(text) ?? /^([0-9.]+):(\d+)$/.exec(text);
  if (m === null) return null;
  return { address: m[1]!, port: Number(m[2]) };
}

/**
 * Parses `ipvsadm -Ln [--exact]`. Firewall-mark services (`FWM`) are skipped: kube-proxy never
 * makes them, so they are never diffed or deleted.
 */
export function parseIpvsadmList(text: string): IpvsServiceEntry[] {
  const out: { entry: IpvsServiceEntry; rs: IpvsRealServerEntry[] }[] = [];
  let current: { entry: IpvsServiceEntry; rs: IpvsRealServerEntry[] } | null = null;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "") continue;
    const fields = line.split(/\s+/);
    if (fields[0] === "->") {
      const hp = splitHostPort(fields[1] ?? "");
      if (hp === null || current === null) continue;
      current.rs.push({
        ...hp,
        forward: fields[2] ?? "",
        weight: Number(fields[3] ?? 0),
        activeConn: Number(fields[4] ?? 0),
        inactiveConn: Number(fields[5] ?? 0),
      });
      continue;
    }
    if (fields[0] === "FWM") {
      current = null;
      continue;
    }
    if (!PROTOCOLS.has(fields[0]!)) continue;
    const hp = splitHostPort(fields[1] ?? "");
    if (hp === null) continue;
    let persistence = 0;
    const schedFlags: string[] = [];
    for (let i = 3; i < fields.length; i++) {
      const f = fields[i]!;
      if (f === "persistent") persistence = Number(fields[++i] ?? 0);
      else if (f.startsWith("(") && f.endsWith(")"))
        schedFlags.push(
          ...f
            .slice(1, -1)
            .split(",")
            .filter((x) => x !== ""),
        );
    }
    current = {
      entry: {
        protocol: fields[0] as IpvsProtocol,
        ...hp,
        scheduler: fields[2] ?? "",
        persistence,
        schedFlags,
        realServers: [],
      },
      rs: [],
    };
    out.push(current);
  }
  return out.map(({ entry, rs }) => ({ ...entry, realServers: rs }));
}

export class Ipvsadm {
  private readonly run: (argv: readonly string[], stdin?: string) => Promise<ExecResult>;

  constructor(runner: Runner, netns?: string) {
    this.run = toolRunner(runner, netns);
  }

  /** The whole IPVS table, numeric, with exact connection counts. */
  async list(): Promise<IpvsServiceEntry[]> {
    return parseIpvsadmList((await this.run(["ipvsadm", "-Ln", "--exact"])).stdout);
  }

  /** One batch of ipvsadm commands (`-A -t 10.0.0.1:80 -s rr` …), one per line, through `-R`. */
  async restore(lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return;
    await this.run(["ipvsadm", "-R"], lines.join("\n") + "\n");
  }

  /** `ipvsadm --set TCP TCPFIN UDP` (seconds; 0 keeps the kernel's value). */
  async setTimeouts(tcp: number, tcpFin: number, udp: number): Promise<void> {
    await this.run(["ipvsadm", "--set", String(tcp), String(tcpFin), String(udp)]);
  }

  /** `ipvsadm -C`: every virtual server goes (upstream cleanup's `ipvs.Flush`). */
  async clear(): Promise<void> {
    await this.run(["ipvsadm", "-C"]);
  }
}

/** One line of `ipvsadm -Ln --stats [--exact]`: connections, packets and bytes in and out. */
export interface IpvsStats {
  readonly conns: number;
  readonly inPkts: number;
  readonly outPkts: number;
  readonly inBytes: number;
  readonly outBytes: number;
}

export interface IpvsServiceStats {
  readonly protocol: IpvsProtocol;
  readonly address: string;
  readonly port: number;
  readonly stats: IpvsStats;
  /** By `ip:port` (`[ip]:port` for IPv6), as the real server lines print them. */
  readonly realServers: ReadonlyMap<string, IpvsStats>;
}

/** `1234`, or without `--exact` `12K`, `3M`… */
function statNumber(text: string): number {
  const m = /^(\d+)([KMGT]?)$/.exec(text);
  if (m === null) return Number.NaN;
  return Number(m[1]) * 1000 ** " KMGT".indexOf(m[2] === "" ? " " : m[2]!);
}

/** Parses `ipvsadm -Ln --stats [--exact]`; firewall-mark services are skipped, as in the list. */
export function parseIpvsadmStats(text: string): IpvsServiceStats[] {
  const out: { entry: Omit<IpvsServiceStats, "realServers">; rs: Map<string, IpvsStats> }[] = [];
  let current: (typeof out)[number] | null = null;
  const statsOf = (f: readonly string[], from: number): IpvsStats | null => {
    const n = f.slice(from, from + 5).map(statNumber);
    if (n.length !== 5 || n.some(Number.isNaN)) return null;
    return { conns: n[0]!, inPkts: n[1]!, outPkts: n[2]!, inBytes: n[3]!, outBytes: n[4]! };
  };
  for (const raw of text.split("\n")) {
    const fields = raw.trim().split(/\s+/);
    if (fields[0] === "->") {
      const stats = statsOf(fields, 2);
      if (current !== null && stats !== null && splitHostPort(fields[1] ?? "") !== null)
        current.rs.set(fields[1]!, stats);
      continue;
    }
    if (fields[0] === "FWM") {
      current = null;
      continue;
    }
    if (!PROTOCOLS.has(fields[0]!)) continue;
    const hp = splitHostPort(fields[1] ?? "");
    const stats = statsOf(fields, 2);
    if (hp === null || stats === null) continue;
    current = { entry: { protocol: fields[0] as IpvsProtocol, ...hp, stats }, rs: new Map() };
    out.push(current);
  }
  return out.map(({ entry, rs }) => ({ ...entry, realServers: rs }));
}
