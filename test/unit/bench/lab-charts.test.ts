import { test } from "node:test";
import assert from "node:assert/strict";
import { labCharts, labTable } from "../../../bench/lab.ts";
import type { LabRow } from "../../../bench/lab.ts";

const p = { count: 10, failed: 0, p50: 0.3, p99: 1, p999: 2, softirqMsPerPacket: 0.01 };
const row = (mode: LabRow["mode"], services: number, extra: Partial<LabRow> = {}): LabRow => ({
  mode,
  services,
  endpointsPerService: 1,
  programmedMs: 1000,
  tcp: p,
  udp: p,
  daemonHwmMB: 80,
  note: "",
  ...extra,
});

test("emulated rows get their own chart, native rows the latency, programming and RSS charts", () => {
  const charts = labCharts(
    [
      row("nftables", 100),
      row("nftables", 1000),
      row("ipvs", 100, { emulated: "tcg", tcp: { ...p, p50: 12 } }),
    ],
    "s",
  );
  assert.deepEqual(Object.keys(charts).sort(), [
    "lab-daemon-rss.svg",
    "lab-ipvs-vm-latency.svg",
    "lab-latency-p50.svg",
    "lab-latency-p99.svg",
    "lab-programming.svg",
  ]);
  assert.doesNotMatch(charts["lab-latency-p50.svg"]!, /ipvs/);
  assert.match(charts["lab-ipvs-vm-latency.svg"]!, /ipvs \(VM, tcg emulated\) p50/);
});

test("rows saved before the daemon's RSS was read: no RSS chart, a dash in the table", () => {
  const { daemonHwmMB: _saved, ...old } = row("iptables-nft", 100);
  const charts = labCharts([old as LabRow], "s");
  assert.equal(charts["lab-daemon-rss.svg"], undefined);
  assert.match(labTable([old as LabRow]), /\| 0 \| — \| — \|$/m);
});
