import { pino } from "pino";
import { iptablesProxier } from "../../src/backends/iptables/proxier.ts";
import type { IptablesSettings } from "../../src/backends/iptables/types.ts";
import type { IptablesInterface } from "../../src/kernel/iptables.ts";
import type { ProxyStateStore } from "../../src/proxy/changetracker.ts";
import { FakeClock, type Clock } from "../../src/proxy/clock.ts";
import { ProxyHealth } from "../../src/proxy/health.ts";
import { FAKE_PROXIER_SETTINGS } from "./iptables-builders.ts";

export interface TestProxierOptions {
  readonly ipt: IptablesInterface;
  readonly store: ProxyStateStore;
  /** Default: upstream's fake proxier settings. */
  readonly settings?: IptablesSettings;
  /** Default: a FakeClock. */
  readonly clock?: Clock;
  readonly maxServicesPerTransaction?: number | undefined;
}

/** The iptables proxier as tests drive it: silent, no metrics, a 30 s sync period, initialized. */
export function testProxier(options: TestProxierOptions): ReturnType<typeof iptablesProxier> {
  const clock = options.clock ?? new FakeClock();
  const proxier = iptablesProxier({
    ipt: options.ipt,
    settings: options.settings ?? FAKE_PROXIER_SETTINGS,
    store: options.store,
    clock,
    log: pino({ level: "silent" }),
    health: new ProxyHealth(60_000, clock),
    metrics: null,
    syncPeriodMs: 30_000,
    ...(options.maxServicesPerTransaction === undefined
      ? {}
      : { maxServicesPerTransaction: options.maxServicesPerTransaction }),
  });
  proxier.setInitialized();
  return proxier;
}
