/**
 * The desired state of one family as text, the way `render --proxy-mode ipvs` prints it: the
 * `ipvsadm -R` batch a first sync would send, the kube-ipvs0 addresses, the `ipset restore`
 * commands, the iptables-restore payload and which Service port each virtual server serves
 * (what `explain` names them by). Pure.
 */
import { addServiceLine, createSetLine, realServerLine } from "./plan.ts";
import { virtualServerKey } from "./render.ts";
import type { IpvsDesiredState } from "./types.ts";

/** The ipvsadm commands that build the table from nothing, one virtual server after another. */
export function ipvsadmLines(desired: IpvsDesiredState): string[] {
  const lines: string[] = [];
  const seen = new Set<string>();
  for (const d of desired.virtualServers) {
    const key = virtualServerKey(d.vs);
    if (seen.has(key)) continue;
    seen.add(key);
    lines.push(addServiceLine(d.vs));
    for (const rs of d.realServers) lines.push(realServerLine(d.vs, rs));
  }
  return lines;
}

export function ipsetLines(desired: IpvsDesiredState): string[] {
  const lines: string[] = [];
  for (const set of desired.ipsets) {
    lines.push(createSetLine(set));
    for (const entry of set.entries) lines.push(`add ${set.name} ${entry}`);
  }
  return lines;
}

/** The section naming each virtual server's Service port (IPVS itself holds no names). */
export const SERVICE_PORTS_SECTION = "virtual servers by service port";

/** `default/nginx:http ClusterIP TCP:10.1.125.152:80`, one per virtual server of a Service port. */
export function servicePortLines(desired: IpvsDesiredState): string[] {
  return desired.virtualServers.map((d) => `${d.servicePort} ${d.kind} ${virtualServerKey(d.vs)}`);
}

export function formatDesired(desired: IpvsDesiredState): string {
  const section = (title: string, lines: readonly string[]): string =>
    `# ${title}\n${lines.map((l) => `${l}\n`).join("")}`;
  return [
    section("ipvsadm -R", ipvsadmLines(desired)),
    section("kube-ipvs0 addresses", desired.bindAddresses),
    section("ipset -exist restore", ipsetLines(desired)),
    `# iptables-restore --noflush\n${desired.iptables}`,
    section(SERVICE_PORTS_SECTION, servicePortLines(desired)),
  ].join("");
}
