/**
 * The scale lab's ipvs series: this kernel has no IPVS, so the measurement runs inside the ipvs
 * VM (docs/ipvs-vm.md; the image is cached). One boot with KPT_VM_MAIN=datapath runs
 * test/vm/guest/datapath.ts, which reports one `KPT-LAB {json}` diagnostic per size on the serial
 * console; the rows it gives are marked with the accelerator (`emulated: "tcg"` when QEMU had no
 * hardware virtualisation, as on this machine: then every packet is emulated and only the shape
 * of the series, not its values, compares with the other modes).
 */
import { bootFailure } from "../../test/vm/console.ts";
import { boot, buildImage, preferredAccel } from "../../test/vm/qemu.ts";
import type { Limits } from "../../test/vm/qemu.ts";
import { percentilesOf } from "../lab.ts";
import type { LabRow } from "../lab.ts";

export interface VmLabOptions {
  readonly sizes: readonly number[];
  readonly endpointsPerService: number;
  readonly connections: number;
  readonly ratePerSecond: number;
  /** Cap on the daemon's time to program one size, inside the guest. */
  readonly programCapMs: number;
}

interface GuestRow {
  readonly services: number;
  readonly endpointsPerService: number;
  readonly programmedMs: number | null;
  readonly tcp: string | null;
  readonly udp: string | null;
  readonly daemonHwmMB: number | null;
  readonly note: string;
}

const MARK = "KPT-LAB ";

/** The rows in the guest's diagnostics (pure). */
export function vmRows(messages: readonly string[], accel: string): LabRow[] {
  return messages
    .filter((m) => m.startsWith(MARK))
    .map((m) => {
      const g = JSON.parse(m.slice(MARK.length)) as GuestRow;
      return {
        mode: "ipvs",
        emulated: accel,
        services: g.services,
        endpointsPerService: g.endpointsPerService,
        programmedMs: g.programmedMs,
        tcp: g.tcp === null ? null : percentilesOf(g.tcp),
        udp: g.udp === null ? null : percentilesOf(g.udp),
        daemonHwmMB: g.daemonHwmMB,
        note: g.note,
      };
    });
}

export async function runVmLab(options: VmLabOptions, log: (line: string) => void): Promise<LabRow[]> {
  const perSizeMs = options.programCapMs + 600_000;
  const limits: Limits = {
    buildMs: 20 * 60_000,
    bootMs: 180_000,
    silenceMs: perSizeMs,
    totalMs: 600_000 + options.sizes.length * perSizeMs,
  };
  log("lab ipvs: the VM image (scripts/vm/build-image.sh, cached)…");
  const image = await buildImage(limits);
  const accel = preferredAccel();
  log(`lab ipvs: image ready in ${(image.buildMs / 1000).toFixed(0)} s; booting (${accel})…`);
  const run = await boot(
    image,
    accel,
    [
      "KPT_VM_MAIN=datapath",
      `KPT_LAB_SIZES=${options.sizes.join(",")}`,
      `KPT_LAB_ENDPOINTS=${options.endpointsPerService}`,
      `KPT_LAB_CONNECTIONS=${options.connections}`,
      `KPT_LAB_RATE=${options.ratePerSecond}`,
      `KPT_LAB_CAP_S=${Math.ceil(options.programCapMs / 1000)}`,
    ],
    limits,
  );
  const rows = vmRows(
    run.state.diagnostics.map((d) => d.message),
    accel,
  );
  const failure = bootFailure(run.state, run.exit);
  const failed = run.state.results.filter((r) => r.status === "fail");
  log(
    `lab ipvs: ${rows.length} row(s) in ${(run.wallMs / 1000).toFixed(0)} s of QEMU wall time` +
      (run.state.done === undefined
        ? ""
        : ` (guest uptime ${run.state.bootedAt} → ${run.state.done.uptime} s)`),
  );
  if (failure !== undefined || failed.length > 0) {
    const why = failed.map((r) => `${r.path.join(" › ")}: ${r.error ?? "failed"}`).join("\n");
    log(`lab ipvs: ${failure ?? "a guest step failed"}\n${why}\n${run.tail.join("\n")}`);
  }
  return rows;
}
