import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  combineRounds,
  labDefaults,
  labGoal,
  processCpuMs,
  type LabRow,
  type Percentiles,
} from "../../../bench/lab.ts";

const p = (p50: number, p99: number, softirq = 0.1): Percentiles => ({
  count: 100,
  failed: 1,
  p50,
  p99,
  p999: p99 * 2,
  softirqMsPerPacket: softirq,
});

const row = (mode: LabRow["mode"], services: number, tcpP99: number, udpP99: number): LabRow => ({
  mode,
  services,
  endpointsPerService: 1,
  programmedMs: 1000,
  tcp: p(0.2, tcpP99),
  udp: p(0.3, udpP99),
  daemonHwmMB: 60,
  note: "",
});

describe("scale lab rounds", () => {
  it("a row is the median of its rounds, so one slow round does not make its p99", () => {
    const combined = combineRounds([p(0.25, 0.5), p(0.26, 9.0), p(0.24, 0.55)]);
    assert.equal(combined.p99, 0.55);
    assert.equal(combined.p50, 0.25);
    assert.equal(combined.p999, 1.1);
    assert.equal(combined.count, 300);
    assert.equal(combined.failed, 3);
    const even = combineRounds([p(0.2, 0.4), p(0.4, 0.6)]);
    assert.equal(even.p99, 0.5);
  });

  it("the goal compares nftables' p99 at its largest size with its smallest", () => {
    const rows = [
      row("nftables", 100, 0.5, 1.0),
      row("iptables-nft", 30_000, 9, 9),
      row("nftables", 30_000, 0.54, 1.2),
      row("nftables", 1000, 0.7, 0.7),
    ];
    const goal = labGoal(rows);
    assert.match(goal, /at 30,000 ≤ 1\.1× at 100 Services/);
    assert.match(goal, /TCP connect 0\.540 \/ 0\.500 ms = 1\.08× \(met\)/);
    assert.match(goal, /UDP round trip 1\.200 \/ 1\.000 ms = 1\.20× \(not met\)/);
    assert.match(labGoal([row("nftables", 100, 0.5, 1)]), /needs two nftables sizes/);
  });
});

describe("scale lab defaults and the daemon's CPU", () => {
  it("the default lab covers 100…30,000 Services on the data path and 1,000…30,000 on the control plane; 50,000 is opt-in", () => {
    const full = labDefaults(false);
    assert.deepEqual(full.dataSizes, [100, 1000, 10_000, 30_000]);
    assert.deepEqual(full.controlSizes, [1000, 10_000, 30_000]);
    assert.equal(full.rounds, 3);
    assert.equal(full.connections, 2000);
    const quick = labDefaults(true);
    assert.deepEqual(quick.dataSizes, [100, 1000]);
    assert.deepEqual(quick.controlSizes, [1000]);
    assert.equal(quick.rounds, 1);
    assert.equal(quick.connections, 300);
  });

  it("reads utime, stime and the reaped children's times of a /proc/PID/stat line", () => {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime …
    const stat = "4242 (node (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 3000 25 20 0 11 0 500";
    assert.equal(processCpuMs(stat), (150 + 50 + 3000 + 25) * 10);
    assert.throws(() => processCpuMs("garbage"));
  });
});
