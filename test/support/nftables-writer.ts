/** An `NftablesWriter` on a `FakeNft` and a fake clock, for golden and unit tests. */
import { pino } from "pino";
import { NftablesWriter } from "../../src/backends/nftables/proxier.ts";
import type { NftablesSettings } from "../../src/backends/nftables/types.ts";
import { FakeClock } from "../../src/proxy/clock.ts";
import { FakeNft } from "./nftables-fake.ts";

export interface FakeNftablesNode {
  readonly kernel: FakeNft;
  readonly clock: FakeClock;
  readonly writer: NftablesWriter;
  /** The family's table in knftables' dump form. */
  dump(): string;
}

export function fakeNftablesNode(
  settings: NftablesSettings,
  kernel: FakeNft = new FakeNft(),
): FakeNftablesNode {
  const clock = new FakeClock();
  const family = settings.family === "IPv4" ? "ip" : "ip6";
  const writer = new NftablesWriter({
    kernel: {
      apply: async (t) => kernel.apply(t.payload),
      read: async () => ({ dump: kernel.tableDump(family, "kube-proxy"), ifIndex: () => 1 }),
    },
    settings,
    clock,
    log: pino({ level: "silent" }),
  });
  return { kernel, clock, writer, dump: () => kernel.dump(family, "kube-proxy") };
}
