import { test } from "node:test";
import assert from "node:assert/strict";
import { FakeIptables } from "../../../src/kernel/fake.ts";
import { Iptables, RestoreError } from "../../../src/kernel/iptables.ts";
import type { IptablesInterface } from "../../../src/kernel/iptables.ts";
import { stripComments, runner, withNetns } from "../../support/netns.ts";

type Step = (ipt: IptablesInterface) => Promise<unknown>;

const portalJump: Step = (ipt) =>
  ipt.ensureRule("prepend", "nat", "OUTPUT", [
    "-m",
    "comment",
    "--comment",
    "kubernetes service portals",
    "-j",
    "KUBE-SERVICES",
  ]);

// Rules are written in iptables-save's canonical form so the fake (which stores text verbatim) can match.
const STEPS: readonly Step[] = [
  (ipt) =>
    ipt.restore(`*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-B - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-A - [0:0]
-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment "ns/a:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-A
-A KUBE-SVC-A -m comment --comment "ns/a:dns -> 10.1.0.1:5353" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-A
-A KUBE-SVC-A -j KUBE-SEP-A
-A KUBE-SEP-A -s 10.1.0.1/32 -j MARK --set-xmark 0x4000/0x4000
-A KUBE-SEP-A -p udp -m udp -j DNAT --to-destination 10.1.0.1:5353
COMMIT
*filter
:KUBE-FORWARD - [0:0]
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
`),
  // Twice: the second call finds the rule already in place.
  portalJump,
  portalJump,
  (ipt) => ipt.ensureRule("append", "nat", "PREROUTING", ["-j", "KUBE-SVC-B"]),
  (ipt) => ipt.ensureRule("append", "nat", "OUTPUT", ["-j", "RETURN"]),
  // Fails: KUBE-SVC-B is referenced by the (foreign) PREROUTING rule.
  (ipt) =>
    ipt.restore(
      "*nat\n:KUBE-SVC-A - [0:0]\n:KUBE-SVC-B - [0:0]\n-A KUBE-SVC-A -j RETURN\n-X KUBE-SVC-B\nCOMMIT\n",
    ),
  (ipt) =>
    ipt.restore(
      "*nat\n:KUBE-SEP-A - [0:0]\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -j RETURN\n-X KUBE-SEP-A\nCOMMIT\n",
    ),
  (ipt) => ipt.deleteRule("nat", "PREROUTING", ["-j", "KUBE-SVC-B"]),
  (ipt) => ipt.ensureChain("mangle", "KUBE-PROXY-CANARY"),
  (ipt) =>
    ipt.restore(
      "*filter\n:KUBE-FORWARD - [0:0]\n-A KUBE-FORWARD -j ACCEPT\n-A KUBE-FORWARD -j NOPE\nCOMMIT\n",
    ),
];

async function outcomes(ipt: IptablesInterface): Promise<string[]> {
  const seen: string[] = [];
  for (const step of STEPS) {
    const result = await step(ipt).then(
      (value) => `ok ${JSON.stringify(value ?? null)}`,
      (err: unknown) => (err instanceof RestoreError ? "restore-error" : `error ${String(err)}`),
    );
    const state = ["mangle", "nat", "filter"] as const;
    const dumps = await Promise.all(state.map((t) => ipt.save(t)));
    seen.push(result, ...dumps.map(stripComments));
  }
  return seen;
}

for (const backend of ["legacy", "nft"] as const) {
  test(`the fake matches the ${backend} kernel step by step (results and save dumps)`, async () => {
    const expected = await outcomes(new FakeIptables());
    const actual = await withNetns((netns) =>
      outcomes(new Iptables({ runner, family: "IPv4", backend, netns })),
    );
    assert.equal(expected.filter((o) => o === "restore-error").length, 2, "both failing steps fail");
    assert.deepEqual(actual, expected);
  });
}
