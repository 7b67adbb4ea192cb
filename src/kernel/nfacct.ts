import { KubeProxyError } from "../errors.ts";
import type { Runner } from "./exec.ts";

/** A counter could not be created (the tool failed or refused the name). */
export class NfacctError extends KubeProxyError {
  readonly code = "KPT_NFACCT";
}

/** Counters kube-proxy attaches to its rules (`-m nfacct --nfacct-name …`). */
export const CT_STATE_INVALID_DROPPED_PKTS = "ct_state_invalid_dropped_pkts";
export const LOCALHOST_NPS_ACCEPTED_PKTS = "localhost_nps_accepted_pkts";

/** NFACCT_NAME_MAX (32) minus the terminating NUL. */
const NFACCT_NAME_MAX = 31;

export interface NfacctOptions {
  readonly netns?: string;
  readonly timeoutMs?: number;
}

export interface NfacctCounter {
  readonly name: string;
  readonly packets: bigint;
  readonly bytes: bigint;
}

/**
 * Ensures the named counter exists. Resolves false when it cannot be created (no nfacct tool,
 * no kernel support): the caller then leaves the `-m nfacct` match out of its rules.
 */
export async function ensureNfacctCounter(
  runner: Runner,
  name: string,
  options: NfacctOptions = {},
): Promise<boolean> {
  return (await createNfacctCounter(runner, name, options)) === null;
}

/** As ensureNfacctCounter, but says why: null when the counter exists, else what went wrong. */
export async function createNfacctCounter(
  runner: Runner,
  name: string,
  options: NfacctOptions = {},
): Promise<Error | null> {
  // The tool silently truncates longer names, which would leave rules naming a missing counter.
  if (name.length === 0 || name.length > NFACCT_NAME_MAX)
    return new NfacctError(`counter name ${JSON.stringify(name)} is not 1 to ${NFACCT_NAME_MAX} characters`);
  try {
    const result = await runner.run(["nfacct", "add", name], {
      netns: options.netns,
      timeoutMs: options.timeoutMs ?? 5_000,
      okExitCodes: [0, 1],
    });
    // EBUSY is how the kernel says the object already exists.
    if (result.exitCode === 0 || /Device or resource busy|File exists/.test(result.stderr)) return null;
    return new NfacctError(
      `nfacct add ${name} failed: ${result.stderr.trim() || `exit status ${result.exitCode}`}`,
    );
  } catch (err) {
    return err instanceof Error ? err : new NfacctError(String(err));
  }
}

const COUNTER_LINE = /pkts\s*=\s*(\d+)\s*,\s*bytes\s*=\s*(\d+).*?\}\s*=\s*([^;\s]+)\s*;/;

/** Parses `nfacct list` lines like `{ pkts = 00000000000000000003, bytes = 00000000000000000252 } = foo;`. */
export function parseNfacctList(output: string): NfacctCounter[] {
  const counters: NfacctCounter[] = [];
  for (const line of output.split("\n")) {
    const match = COUNTER_LINE.exec(line);
    if (match?.[1] === undefined || match[2] === undefined || match[3] === undefined) continue;
    counters.push({ name: match[3], packets: BigInt(match[1]), bytes: BigInt(match[2]) });
  }
  return counters;
}

/** All counters, or null when they cannot be read (treated as "unavailable", never thrown). */
export async function readNfacctCounters(
  runner: Runner,
  options: NfacctOptions = {},
): Promise<NfacctCounter[] | null> {
  try {
    const result = await runner.run(["nfacct", "list"], {
      netns: options.netns,
      timeoutMs: options.timeoutMs ?? 5_000,
    });
    return parseNfacctList(result.stdout);
  } catch {
    return null;
  }
}
