/**
 * Stateful fakes of IPVS (`ipvsadm -R` lines in, `ipvsadm -Ln` entries out), ipset (`ipset
 * -exist restore` lines in, `ipset save` sets out) and the addresses of interfaces, for tests of
 * ipvs mode's writer without a kernel. They refuse what the tools refuse: a real server for a
 * virtual server that does not exist, a virtual server added twice, an entry for a missing set;
 * like the tools, a batch stops at its first bad line with the lines before it applied.
 */
import { ExecError } from "./exec.ts";
import type { IpsetSaved } from "./ipset.ts";
import { splitHostPort, type IpvsProtocol, type IpvsRealServerEntry, type IpvsServiceEntry } from "./ipvs.ts";

interface FakeService {
  protocol: IpvsProtocol;
  address: string;
  port: number;
  scheduler: string;
  persistence: number;
  schedFlags: string[];
  realServers: Map<string, IpvsRealServerEntry>;
}

const PROTOCOL_FLAGS: Readonly<Record<string, IpvsProtocol>> = {
  "-t": "TCP",
  "-u": "UDP",
  "--sctp-service": "SCTP",
};

function fail(argv: string[], message: string): never {
  throw new ExecError(argv, 2, message, "exit");
}

export class FakeIpvs {
  private readonly services = new Map<string, FakeService>();
  /** Every batch given to `restore`, for assertions. */
  readonly batches: string[][] = [];

  list(): IpvsServiceEntry[] {
    return [...this.services.values()].map((s) => ({
      protocol: s.protocol,
      address: s.address,
      port: s.port,
      scheduler: s.scheduler,
      persistence: s.persistence,
      schedFlags: [...s.schedFlags],
      realServers: [...s.realServers.values()],
    }));
  }

  /** Sets a real server's connection counts (what traffic would do). */
  setConnections(vsKey: string, rsKey: string, activeConn: number, inactiveConn: number): void {
    const rs = this.services.get(vsKey)?.realServers.get(rsKey);
    if (rs === undefined) throw new Error(`no real server ${rsKey} in ${vsKey}`);
    this.services.get(vsKey)!.realServers.set(rsKey, { ...rs, activeConn, inactiveConn });
  }

  restore(lines: readonly string[]): void {
    this.batches.push([...lines]);
    for (const line of lines) this.apply(line);
  }

  private apply(line: string): void {
    const argv = ["ipvsadm", ...line.split(" ")];
    const words = line.split(" ");
    const verb = words[0]!;
    const protocol = PROTOCOL_FLAGS[words[1]!];
    const hp = splitHostPort(words[2] ?? "");
    if (protocol === undefined || hp === null) fail(argv, `Illegal virtual server address: ${line}`);
    const key = `${protocol}:${words[2]}`;
    const opt = (flag: string): string | undefined => {
      const i = words.indexOf(flag);
      return i < 0 ? undefined : words[i + 1];
    };
    const svc = this.services.get(key);
    switch (verb) {
      case "-A":
      case "-E": {
        if (verb === "-A" && svc !== undefined) fail(argv, "Service already exists");
        if (verb === "-E" && svc === undefined) fail(argv, "No such service");
        const b = opt("-b");
        this.services.set(key, {
          protocol,
          ...hp,
          scheduler: opt("-s") ?? "wlc",
          persistence: opt("-p") === undefined ? 0 : Number(opt("-p")),
          schedFlags: b === undefined ? [] : b.split(","),
          realServers: svc?.realServers ?? new Map(),
        });
        return;
      }
      case "-D":
        if (svc === undefined) fail(argv, "No such service");
        this.services.delete(key);
        return;
      case "-a":
      case "-e":
      case "-d": {
        if (svc === undefined) fail(argv, "Service not defined");
        const rsText = opt("-r");
        const rs = rsText === undefined ? null : splitHostPort(rsText);
        if (rs === null) fail(argv, "Illegal real server address");
        const existing = svc.realServers.get(rsText!);
        if (verb === "-d") {
          if (existing === undefined) fail(argv, "No such destination");
          svc.realServers.delete(rsText!);
          return;
        }
        if (verb === "-a" && existing !== undefined) fail(argv, "Destination already exists");
        if (verb === "-e" && existing === undefined) fail(argv, "No such destination");
        svc.realServers.set(rsText!, {
          ...rs,
          forward: "Masq",
          weight: Number(opt("-w") ?? 1),
          activeConn: existing?.activeConn ?? 0,
          inactiveConn: existing?.inactiveConn ?? 0,
        });
        return;
      }
      default:
        fail(argv, `unknown command ${verb}`);
    }
  }
}

export class FakeIpsets {
  private readonly sets = new Map<string, { type: string; options: string; entries: Set<string> }>();
  readonly batches: string[][] = [];

  save(): IpsetSaved[] {
    return [...this.sets].map(([name, s]) => ({
      name,
      type: s.type,
      options: s.options,
      entries: [...s.entries],
      nomatch: [],
    }));
  }

  has(name: string): boolean {
    return this.sets.has(name);
  }

  entries(name: string): string[] {
    return [...(this.sets.get(name)?.entries ?? [])].sort();
  }

  /** Destroys a set (someone else's `ipset destroy`). */
  destroy(name: string): void {
    this.sets.delete(name);
  }

  restore(lines: readonly string[]): void {
    this.batches.push([...lines]);
    for (const line of lines) {
      const [verb, name, third, ...rest] = line.split(" ");
      const argv = ["ipset", "-exist", "restore"];
      if (name === undefined || third === undefined) fail(argv, `Syntax error: ${line}`);
      const set = this.sets.get(name);
      if (verb === "create") {
        if (set !== undefined && set.type !== third)
          fail(argv, `Set cannot be created: set with the same name already exists`);
        if (set === undefined)
          this.sets.set(name, { type: third, options: rest.join(" "), entries: new Set() });
      } else if (verb === "add" || verb === "del") {
        if (set === undefined) fail(argv, `The set with the given name does not exist`);
        if (verb === "add") set.entries.add(third);
        else set.entries.delete(third);
      } else fail(argv, `unknown command ${verb}`);
    }
  }
}

/** Interfaces and their addresses (bare IPs), as `ip -j addr` shows them. */
export class FakeInterfaces {
  readonly byName = new Map<string, string[]>();

  constructor(initial: Readonly<Record<string, readonly string[]>> = {}) {
    for (const [name, addrs] of Object.entries(initial)) this.byName.set(name, [...addrs]);
  }

  ensureDummy(name: string): void {
    if (!this.byName.has(name)) this.byName.set(name, []);
  }

  add(name: string, ip: string): void {
    const list = this.byName.get(name);
    if (list === undefined) fail(["ip", "addr", "add", ip, "dev", name], `Cannot find device "${name}"`);
    if (list.includes(ip)) fail(["ip", "addr", "add", ip, "dev", name], "RTNETLINK answers: File exists");
    list.push(ip);
  }

  delete(name: string, ip: string): void {
    const list = this.byName.get(name) ?? [];
    const i = list.indexOf(ip);
    if (i < 0)
      fail(["ip", "addr", "del", ip, "dev", name], "RTNETLINK answers: Cannot assign requested address");
    list.splice(i, 1);
  }
}
