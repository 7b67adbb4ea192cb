import { test } from "node:test";
import assert from "node:assert/strict";
import { chooseBackend, detectBackend } from "../../../src/kernel/detect.ts";
import { ScriptRunner } from "./script-runner.ts";

const HINT = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
const CANARY = "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n";
const rules = (n: number) =>
  "*filter\n" +
  Array.from({ length: n }, (_, i) => `-A INPUT -s 10.0.0.${i} -j DROP`).join("\n") +
  "\nCOMMIT\n";

test("a kubelet hint chain decides, nft first", () => {
  assert.equal(chooseBackend({ nftMangle: HINT, legacyAll: CANARY, nftAll: "" }).backend, "nft");
  assert.equal(
    chooseBackend({ nftMangle: "", legacyAll: CANARY + rules(1), nftAll: rules(9) }).backend,
    "legacy",
  );
});

test("otherwise the backend with more rules wins; ties and empty hosts pick nft", () => {
  assert.equal(chooseBackend({ nftMangle: "", legacyAll: rules(5), nftAll: rules(2) }).backend, "legacy");
  assert.equal(chooseBackend({ nftMangle: "", legacyAll: rules(2), nftAll: rules(5) }).backend, "nft");
  const empty = chooseBackend({ nftMangle: "", legacyAll: "", nftAll: "" });
  assert.equal(empty.backend, "nft");
  assert.match(empty.reason, /0/);
});

test("detectBackend reads both families of both backends and survives a missing tool", async () => {
  const runner = new ScriptRunner((argv) => {
    if (argv[0] === "ip6tables-legacy-save") return { spawnError: true };
    if (argv[0] === "iptables-legacy-save") return { stdout: rules(3) };
    if (argv[0]?.includes("nft") && argv.includes("-S")) return { exitCode: 1 };
    return { stdout: rules(1) };
  });
  const result = await detectBackend(runner, { netns: "kpt-d" });
  assert.equal(result.backend, "legacy");
  assert.match(result.reason, /3 > 2/);
  const tools = runner.calls.map((c) => c.argv.join(" ")).sort();
  assert.deepEqual(tools, [
    "ip6tables-legacy-save",
    "ip6tables-nft -t mangle -S KUBE-IPTABLES-HINT",
    "ip6tables-nft -t mangle -S KUBE-KUBELET-CANARY",
    "ip6tables-nft-save",
    "iptables-legacy-save",
    "iptables-nft -t mangle -S KUBE-IPTABLES-HINT",
    "iptables-nft -t mangle -S KUBE-KUBELET-CANARY",
    "iptables-nft-save",
  ]);
  assert.ok(runner.calls.every((c) => c.options.netns === "kpt-d" && (c.options.timeoutMs ?? 0) > 0));
});

test("detectBackend does not save iptables-nft's rules when iptables-legacy holds none", async () => {
  const runner = new ScriptRunner((argv) =>
    argv[0]?.includes("legacy")
      ? { stdout: "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n" }
      : argv.includes("-S")
        ? { exitCode: 1 }
        : { stdout: rules(4) },
  );
  const result = await detectBackend(runner);
  assert.equal(result.backend, "nft");
  assert.equal(result.reason, "iptables-legacy holds no rules");
  assert.deepEqual(runner.calls.map((c) => c.argv.join(" ")).sort(), [
    "ip6tables-legacy-save",
    "ip6tables-nft -t mangle -S KUBE-IPTABLES-HINT",
    "ip6tables-nft -t mangle -S KUBE-KUBELET-CANARY",
    "iptables-legacy-save",
    "iptables-nft -t mangle -S KUBE-IPTABLES-HINT",
    "iptables-nft -t mangle -S KUBE-KUBELET-CANARY",
  ]);
});

test("detectBackend finds a kubelet hint chain in nft's mangle table by listing the chain", async () => {
  const runner = new ScriptRunner((argv) =>
    argv.join(" ") === "ip6tables-nft -t mangle -S KUBE-KUBELET-CANARY"
      ? { stdout: "-N KUBE-KUBELET-CANARY\n" }
      : argv.includes("-S")
        ? { exitCode: 1 }
        : { stdout: rules(9) },
  );
  const result = await detectBackend(runner);
  assert.equal(result.backend, "nft");
  assert.match(result.reason, /hint\/canary chain found in iptables-nft mangle/);
});
