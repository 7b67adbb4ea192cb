import { test } from "node:test";
import assert from "node:assert/strict";
import { controlCharts, controlTable, fromNetlinkRow } from "../../../bench/lab/control.ts";
import type { ControlRow } from "../../../bench/lab/control.ts";

const netlink = (services: number, scale: number) =>
  fromNetlinkRow(
    {
      services,
      endpoints: 1,
      transactions: 4,
      ours: { wallS: 2 * scale, userS: 0, sysS: 0 },
      bareNetlink: { wallS: 1 * scale, userS: 0, sysS: 0 },
      bareNftS: null,
      partials: [
        {
          change: "add one Service",
          commands: 9,
          ours: { wallS: 0.2, userS: 0, sysS: 0 },
          bareNetlink: { wallS: 0.05, userS: 0, sysS: 0 },
          bareNftS: 0.4,
          listings: 0,
        },
        {
          change: "replace one endpoint",
          commands: 5,
          ours: { wallS: 0.1, userS: 0, sysS: 0 },
          bareNetlink: { wallS: 0.02, userS: 0, sysS: 0 },
          bareNftS: 0.3,
          listings: 0,
        },
      ],
      probes: [],
      benchPeakRssMB: 200,
      daemonPeakRssMB: null,
    },
    12,
    [1, 2],
  );

const failed: ControlRow = {
  ...netlink(50000, 1),
  mode: "iptables-nft",
  error: "iptables-nft-restore timed out",
};

test("the control-plane table: ours against the kernel's limit with the ratio, nft -f where timed, failures said", () => {
  const table = controlTable([netlink(1000, 1), failed]);
  assert.match(
    table,
    /\| nftables \| 1,000 x 1 \| bare netlink \| 4 \| 2\.00 s \/ 1\.00 s \(2\.00×\); nft -f — \|/,
  );
  assert.match(table, /200 ms \/ 50 ms \(4\.00×\); nft -f 400 ms/);
  assert.match(table, /\| iptables-nft \| 50,000 x 1 \| failed: iptables-nft-restore timed out \|/);
});

test("the control-plane charts: ours solid and the kernel's limit dashed in the same colour; failed rows not drawn", () => {
  const charts = controlCharts([netlink(1000, 1), netlink(10000, 8), failed], "s");
  assert.deepEqual(Object.keys(charts).sort(), [
    "lab-control-add-service.svg",
    "lab-control-endpoint-change.svg",
    "lab-control-full-sync.svg",
  ]);
  const full = charts["lab-control-full-sync.svg"]!;
  const paths = [...full.matchAll(/<path [^>]*\/>/g)].map((m) => m[0]);
  assert.equal(paths.length, 2, "nftables ours and bare netlink; no nft -f points, no iptables-nft line");
  assert.equal(paths.filter((p) => p.includes("stroke-dasharray")).length, 1);
  assert.doesNotMatch(full, /iptables-nft/);
  assert.match(charts["lab-control-add-service.svg"]!, /nft -f/);
});
