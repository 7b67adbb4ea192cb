import { ConfigError } from "../errors.ts";

/**
 * Go `time.Duration` text, as metav1.Duration reads and writes it in KubeProxyConfiguration
 * files and as upstream flags accept it ("30s", "1m0s", "2h22m", "500ms", "1.5h").
 */
const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

export function parseDuration(text: string, field: string): number {
  const input = text.trim();
  if (input === "0") return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let matched = 0;
  let sign = 1;
  let rest = input;
  if (rest.startsWith("-") || rest.startsWith("+")) {
    sign = rest.startsWith("-") ? -1 : 1;
    rest = rest.slice(1);
  }
  re.lastIndex = 0;
  let match: RegExpExecArray | null;
  while ((match = re.exec(rest)) !== null) {
    const [, value, unit] = match;
    total += Number(value) * (UNIT_MS[unit ?? ""] ?? Number.NaN);
    matched = re.lastIndex;
  }
  if (rest === "" || matched !== rest.length || !Number.isFinite(total)) {
    throw new ConfigError([
      `${field}: invalid duration ${JSON.stringify(text)} (expected e.g. "30s", "1m0s", "500ms")`,
    ]);
  }
  // Nanosecond resolution, as Go's Duration: removes float noise such as 1.001 * 1000.
  return (sign * Math.round(total * 1e6)) / 1e6;
}

/** Formats milliseconds the way Go's Duration.String() does ("1m0s", "24h0m0s", "500ms"). */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  const sign = ms < 0 ? "-" : "";
  const abs = Math.abs(ms);
  if (abs < 1000) return `${sign}${trimFraction(abs)}ms`;
  const hours = Math.floor(abs / 3_600_000);
  const minutes = Math.floor((abs % 3_600_000) / 60_000);
  const seconds = (abs % 60_000) / 1000;
  let out = sign;
  if (hours > 0) out += `${hours}h`;
  if (hours > 0 || minutes > 0) out += `${minutes}m`;
  return `${out}${trimFraction(seconds)}s`;
}

function trimFraction(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(9).replace(/0+$/, "");
}
