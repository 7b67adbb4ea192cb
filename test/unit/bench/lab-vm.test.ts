import { test } from "node:test";
import assert from "node:assert/strict";
import { vmRows } from "../../../bench/lab/vm.ts";

const agent = (count: number) =>
  JSON.stringify({ count, failed: 1, failures: [], p50: 2, p99: 9, p999: 12, elapsedMs: 700, softirqMs: 30 });

test("the guest's KPT-LAB diagnostics become emulated ipvs rows; other diagnostics are ignored", () => {
  const rows = vmRows(
    [
      "ipvsadm -Ln …",
      `KPT-LAB ${JSON.stringify({ services: 100, endpointsPerService: 1, programmedMs: 8000, tcp: agent(300), udp: agent(299), daemonHwmMB: 90, note: "" })}`,
      `KPT-LAB ${JSON.stringify({ services: 1000, endpointsPerService: 1, programmedMs: null, tcp: null, udp: null, daemonHwmMB: null, note: "not programmed within the cap" })}`,
    ],
    "tcg",
  );
  assert.equal(rows.length, 2);
  assert.deepEqual(
    rows.map((r) => [r.mode, r.emulated, r.services, r.programmedMs, r.note]),
    [
      ["ipvs", "tcg", 100, 8000, ""],
      ["ipvs", "tcg", 1000, null, "not programmed within the cap"],
    ],
  );
  assert.equal(rows[0]!.tcp?.p99, 9);
  assert.equal(rows[0]!.tcp?.softirqMsPerPacket, 0.1);
  assert.equal(rows[0]!.udp?.count, 299);
  assert.equal(rows[1]!.tcp, null);
});
