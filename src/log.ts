import { pino, type Logger } from "pino";

/**
 * Structured logs on stderr (stdout belongs to command output such as `render`). Upstream's
 * klog `-v` levels map onto pino levels: 0 → info, 1-3 → debug, ≥4 → trace.
 */
export function createLogger(verbosity = 0, name = "kube-proxy-ts"): Logger {
  const level = verbosity >= 4 ? "trace" : verbosity >= 1 ? "debug" : "info";
  return pino({ name, level, base: undefined }, pino.destination({ fd: 2, sync: true }));
}

export type { Logger };
