import type { Runner } from "./exec.ts";

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
