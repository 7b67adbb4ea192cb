import { ExecError, type Runner } from "./exec.ts";

interface IpAddrJson {
  readonly ifname?: string;
  readonly addr_info?: ReadonlyArray<{ readonly local?: string; readonly prefixlen?: number }>;
}

/** Parses `ip -j addr show` into `address/prefixlen` strings (both families, all interfaces). */
export function parseIpAddrJson(output: string): string[] {
  const links = JSON.parse(output) as IpAddrJson[];
  const out: string[] = [];
  for (const link of links) {
    for (const info of link.addr_info ?? []) {
      if (info.local !== undefined && info.prefixlen !== undefined)
        out.push(`${info.local}/${info.prefixlen}`);
    }
  }
  return out;
}

/** The node's interface addresses, as nodePortAddresses and addrtype LOCAL see them. */
export async function localAddresses(runner: Runner, netns?: string): Promise<string[]> {
  const result = await runner.run(["ip", "-j", "addr", "show"], {
    timeoutMs: 10_000,
    ...(netns === undefined ? {} : { netns }),
  });
  return parseIpAddrJson(result.stdout);
}

/** Parses `ip -j addr show` into bare addresses per interface name. */
export function parseIpAddrByInterface(output: string): Map<string, string[]> {
  const links = JSON.parse(output) as IpAddrJson[];
  const out = new Map<string, string[]>();
  for (const link of links) {
    if (link.ifname === undefined) continue;
    const list = out.get(link.ifname) ?? [];
    for (const info of link.addr_info ?? []) if (info.local !== undefined) list.push(info.local);
    out.set(link.ifname, list);
  }
  return out;
}

/**
 * A dummy interface holding addresses (ipvs mode's kube-ipvs0): created when missing, left down
 * as upstream leaves it (IPv4 addresses on it are local all the same).
 */
export class DummyDevice {
  constructor(
    private readonly runner: Runner,
    readonly name: string,
    private readonly netns?: string,
  ) {}

  private run(argv: readonly string[]) {
    return this.runner.run(argv, {
      timeoutMs: 10_000,
      ...(this.netns === undefined ? {} : { netns: this.netns }),
    });
  }

  /** Every interface's addresses (bare IPs), by interface name. */
  async addressesByInterface(): Promise<Map<string, string[]>> {
    return parseIpAddrByInterface((await this.run(["ip", "-j", "addr", "show"])).stdout);
  }

  async exists(): Promise<boolean> {
    return (await this.addressesByInterface()).has(this.name);
  }

  /** Creates the device unless it exists; resolves true when it existed. */
  async ensure(): Promise<boolean> {
    if (await this.exists()) return true;
    try {
      await this.run(["ip", "link", "add", this.name, "type", "dummy"]);
    } catch (error) {
      // Each family's writer ensures the device; the other one may have created it in between
      // (seen in the VM: the IPv6 first sync failed with "File exists" and had to be retried).
      if (error instanceof ExecError && /File exists/.test(error.stderr)) return true;
      throw error;
    }
    return false;
  }

  async addAddress(ip: string): Promise<void> {
    await this.run(["ip", "addr", "add", `${ip}/${ip.includes(":") ? 128 : 32}`, "dev", this.name]);
  }

  async deleteAddress(ip: string): Promise<void> {
    await this.run(["ip", "addr", "del", `${ip}/${ip.includes(":") ? 128 : 32}`, "dev", this.name]);
  }

  /** Deletes the device; resolves false when it did not exist. */
  async delete(): Promise<boolean> {
    if (!(await this.exists())) return false;
    await this.run(["ip", "link", "del", this.name]);
    return true;
  }
}
