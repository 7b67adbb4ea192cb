/**
 * What ipvs mode leaves in the kernel, removed (upstream pkg/proxy/ipvs/cleanup.go): its virtual
 * servers, the kube-ipvs0 device, its iptables jump rules and chains in both families, then its
 * ipsets (a set still referenced by a rule cannot be destroyed). Two choices differ from
 * upstream, which flushes the whole IPVS table whenever the ip_vs module loads: virtual servers
 * are deleted only when kube-ipvs0 shows that ipvs mode ran here, and never those inside
 * `--ipvs-exclude-cidrs`, so another user of IPVS on the node keeps its table.
 */
import { detectBackend } from "../../kernel/detect.ts";
import { DummyDevice } from "../../kernel/ip.ts";
import { chainsFromSave, Iptables, jumpRuleArgs, type IptablesInterface } from "../../kernel/iptables.ts";
import { Ipset } from "../../kernel/ipset.ts";
import { Ipvsadm } from "../../kernel/ipvs.ts";
import { cidrContainsSloppy, type IPFamily } from "../../ip.ts";
import type { CleanupReport, PlatformContext } from "../types.ts";
import { allIpsetNames, DUMMY_DEVICE, IPVS_CHAINS, IPVS_JUMP_CHAINS } from "./names.ts";
import { deleteServiceLine } from "./plan.ts";

/** The restore payload flushing and deleting ipvs mode's chains present in `existing` (pure). */
export function ipvsChainCleanupPayload(table: "nat" | "filter", existing: readonly string[]): string | null {
  const present = new Set(existing);
  const doomed = IPVS_CHAINS[table].filter((c) => present.has(c));
  if (doomed.length === 0) return null;
  return [
    `*${table}`,
    ...doomed.map((c) => `:${c} - [0:0]`),
    ...doomed.map((c) => `-X ${c}`),
    "COMMIT",
    "",
  ].join("\n");
}

export async function cleanupIptables(ipt: IptablesInterface): Promise<unknown[]> {
  const errors: unknown[] = [];
  for (const row of IPVS_JUMP_CHAINS) {
    // A missing rule is not an error (deleteRule ignores absence).
    await ipt
      .deleteRule(row.table, row.srcChain, jumpRuleArgs(row))
      .catch((err: unknown) => errors.push(err));
  }
  for (const table of ["nat", "filter"] as const) {
    try {
      const payload = ipvsChainCleanupPayload(table, chainsFromSave(await ipt.save(table), table));
      if (payload !== null) await ipt.restore(payload, { noflush: true, counters: true });
    } catch (err) {
      errors.push(err);
    }
  }
  return errors;
}

export async function cleanupIpvs(ctx: PlatformContext): Promise<CleanupReport> {
  const { runner, log, config } = ctx;
  const errors: unknown[] = [];
  const dummy = new DummyDevice(runner, DUMMY_DEVICE);
  let ranHere = false;
  try {
    ranHere = await dummy.exists();
  } catch (err) {
    // No ip tool: no kube-ipvs0 can be there to say ipvs mode ran.
    log.debug({ err }, "Could not list interfaces: no IPVS virtual servers deleted");
  }
  if (ranHere) {
    const ipvsadm = new Ipvsadm(runner);
    const exclude = config.ipvs.excludeCIDRs ?? [];
    try {
      const doomed = (await ipvsadm.list()).filter(
        (vs) => !exclude.some((c) => cidrContainsSloppy(c, vs.address)),
      );
      await ipvsadm.restore(doomed.map(deleteServiceLine));
      if (doomed.length > 0)
        log.info({ virtualServers: doomed.length }, "Deleted IPVS virtual servers left by ipvs mode");
    } catch (err) {
      // No ipvsadm, or no IPVS in this kernel: there are no virtual servers to delete.
      log.debug({ err }, "IPVS not usable: no virtual servers deleted");
    }
    await dummy.delete().catch((err: unknown) => errors.push(err));
  }
  try {
    const { backend } = await detectBackend(runner);
    for (const family of ["IPv4", "IPv6"] as IPFamily[]) {
      const ipt = new Iptables({ runner, family, backend });
      const found = await cleanupIptables(ipt);
      for (const err of found) log.debug({ err, ipFamily: family }, "Cleanup step did not apply");
    }
  } catch (err) {
    errors.push(err);
  }
  const ipset = new Ipset(runner);
  try {
    await ipset.version();
  } catch (err) {
    log.debug({ err }, "ipset not usable: no ipsets to destroy");
    return { mode: "ipvs", errors };
  }
  for (const name of allIpsetNames()) {
    await ipset.destroy(name).catch((err: unknown) => errors.push(err));
  }
  return { mode: "ipvs", errors };
}
