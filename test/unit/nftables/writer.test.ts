/** The nftables writer and kernel helpers on their own: failures, foreign tables, platform checks. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { kernelRefusal, kernelTooOld } from "../../../src/backends/nftables/index.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import type { ExecOptions, ExecResult, Runner } from "../../../src/kernel/exec.ts";
import { failingLine, Nft, parseObjectNames } from "../../../src/kernel/nft.ts";
import type { ProxyState } from "../../../src/proxy/types.ts";
import { FakeNft } from "../../support/nftables-fake.ts";
import { fakeNftablesNode } from "../../support/nftables-writer.ts";

const EMPTY: ProxyState = { family: "IPv4", services: new Map(), endpoints: new Map(), nodeLabels: {} };
const write = (node: ReturnType<typeof fakeNftablesNode>, fullSync: boolean) =>
  node.writer.write({ state: EMPTY, fullSync, changedServices: new Set(), onTransaction: () => undefined });

test("nft's error line is mapped back to the payload command", () => {
  const payload = "add table ip kube-proxy\nadd rule ip kube-proxy nochain reject\n";
  const stderr =
    "/dev/stdin:2:24-30: Error: Could not process rule: No such file or directory\nadd rule ip kube-proxy nochain reject\n";
  assert.deepEqual(failingLine(stderr, payload), {
    line: 2,
    command: "add rule ip kube-proxy nochain reject",
  });
  assert.equal(failingLine("Error: something else", payload), null);
});

test("the chain and set listing keeps our table's objects only", () => {
  const json = JSON.stringify({
    nftables: [
      { metainfo: { version: "1.0.6" } },
      { chain: { family: "ip", table: "kube-proxy", name: "services" } },
      { chain: { family: "ip", table: "foreign", name: "services" } },
      { set: { family: "ip", table: "kube-proxy", name: "affinity-X" } },
    ],
  });
  assert.deepEqual(parseObjectNames(json, "chain", "kube-proxy"), ["services"]);
  assert.deepEqual(parseObjectNames(json, "set", "kube-proxy"), ["affinity-X"]);
});

test("the platform probe only checks adding our table (nft --check): an existing table survives a restart", async () => {
  const calls: { argv: readonly string[]; stdin: ExecOptions["stdin"] }[] = [];
  const runner: Runner = {
    run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
      calls.push({ argv, stdin: options.stdin });
      return Promise.resolve({ argv, stdout: "", stderr: "", exitCode: 0, durationMs: 0 });
    },
  };
  await new Nft(runner).probe("ip6", "kube-proxy");
  assert.deepEqual(calls, [{ argv: ["nft", "--check", "-f", "-"], stdin: "add table ip6 kube-proxy\n" }]);
});

test("kernels before 5.13 are refused, as upstream", () => {
  assert.equal(kernelTooOld("5.12.19-foo"), true);
  assert.equal(kernelTooOld("4.18.0-553.el8"), true);
  assert.equal(kernelTooOld("5.13.0"), false);
  assert.equal(kernelTooOld("6.18.44-fc"), false);
});

test("KUBE_PROXY_NFTABLES_SKIP_KERNEL_VERSION_CHECK skips the kernel check, set to anything", () => {
  const env = "KUBE_PROXY_NFTABLES_SKIP_KERNEL_VERSION_CHECK";
  assert.match(
    kernelRefusal("5.10.0-28-amd64", {}) ?? "",
    /needs kernel 5\.13 or later, this is 5\.10\.0-28-amd64/,
  );
  assert.equal(kernelRefusal("5.10.0-28-amd64", { [env]: "" }), null);
  assert.equal(kernelRefusal("5.10.0-28-amd64", { [env]: "1" }), null);
  assert.equal(kernelRefusal("6.1.0", {}), null);
});

test("a refused transaction leaves the kernel as it was and makes the next sync a full one", async () => {
  const kernel = new FakeNft();
  const node = fakeNftablesNode(upstreamTestSettings("IPv4"), kernel);
  await write(node, true);
  const before = node.dump();
  const original = kernel.apply.bind(kernel);
  kernel.apply = () => {
    throw new Error("refused");
  };
  await assert.rejects(write(node, true), /refused/);
  assert.equal(node.dump(), before);
  kernel.apply = original;
  const outcome = await write(node, false);
  assert.equal(outcome.details.fullSync, true, "the writer forgot what it believed and synced in full");
});

test("a full sync never names another table", async () => {
  const node = fakeNftablesNode(upstreamTestSettings("IPv4"));
  await write(node, true);
  for (const commands of node.kernel.transactions)
    for (const command of commands) assert.match(command, /^\S+ \S+ ip kube-proxy( |$)/, command);
});
