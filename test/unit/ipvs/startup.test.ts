/**
 * ipvs mode's start-up as upstream's `CanUseIPVSProxier` and `NewProxier`: the deprecation
 * warning first, then the platform checks (ipset ≥ 6.0, `ipvsadm -Ln`, the scheduler probe), each
 * failure a KPT_IPVS_UNAVAILABLE before anything is programmed; the sysctls per kernel release.
 * The runner here answers only the platform checks and refuses anything else, so no test can
 * get as far as the sysctls (which are the host's own): the VM scenario checks those.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import { pino } from "pino";
import {
  DEPRECATION_WARNING,
  IpvsUnavailableError,
  SYSCTL,
  ipvsBackend,
  sysctlsFor,
} from "../../../src/backends/ipvs/index.ts";
import { defaultConfiguration } from "../../../src/config/types.ts";
import { ExecError, type ExecOptions, type ExecResult, type Runner } from "../../../src/kernel/exec.ts";

class PlatformRunner implements Runner {
  readonly calls: string[] = [];
  constructor(private readonly answers: Readonly<Record<string, string | Error>>) {}
  run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const line = argv.join(" ");
    const stdin = typeof options.stdin === "string" ? options.stdin : (options.stdin ?? []).join("");
    this.calls.push(stdin === "" ? line : `${line} < ${stdin.trim()}`);
    const key = Object.keys(this.answers).find((k) => line === k);
    const answer = key === undefined ? undefined : this.answers[key];
    if (answer === undefined || answer instanceof Error)
      return Promise.reject(answer ?? new ExecError(argv, 1, `not answered in this test: ${line}`, "exit"));
    return Promise.resolve({ argv, exitCode: 0, stdout: answer, stderr: "", durationMs: 0 });
  }
}

const HEADER = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
`;

async function start(answers: Record<string, string | Error>, scheduler = "") {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(
        ...chunk
          .toString()
          .split("\n")
          .filter((l) => l !== ""),
      );
      done();
    },
  });
  const log = pino({ level: "debug", base: undefined }, sink);
  const runner = new PlatformRunner(answers);
  const config = defaultConfiguration();
  const error = await ipvsBackend
    .open({ config: { ...config, mode: "ipvs", ipvs: { ...config.ipvs, scheduler } }, runner, log })
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  const messages = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
  return { error, messages, calls: runner.calls };
}

test("an ipset older than 6.0: KPT_IPVS_UNAVAILABLE after the deprecation warning, nothing else run", async () => {
  const { error, messages, calls } = await start({ "ipset version": "ipset v5.4, protocol version: 5\n" });
  assert.ok(error instanceof IpvsUnavailableError, String(error));
  assert.equal(error.code, "KPT_IPVS_UNAVAILABLE");
  assert.match(error.message, /ipset version ipset v5\.4.* is less than the minimum 6\.0/);
  assert.equal(messages[0], DEPRECATION_WARNING);
  assert.deepEqual(calls, ["ipset version"]);
});

test("no IPVS in the kernel (ipvsadm -Ln fails): KPT_IPVS_UNAVAILABLE", async () => {
  const { error, calls } = await start({ "ipset version": "ipset v7.17, protocol version: 7\n" });
  assert.ok(error instanceof IpvsUnavailableError);
  assert.match(error.message, /ipvsadm -Ln failed/);
  assert.deepEqual(calls, ["ipset version", "ipvsadm -Ln --exact"]);
});

test("the scheduler is probed with a virtual server on TEST-NET-2, added and deleted; a refusal is KPT_IPVS_UNAVAILABLE", async () => {
  const { error, messages, calls } = await start(
    { "ipset version": "ipset v7.17, protocol version: 7\n", "ipvsadm -Ln --exact": HEADER },
    "lblcr",
  );
  assert.ok(error instanceof IpvsUnavailableError);
  assert.equal(error.message, "IPVS scheduler lblcr is not usable");
  assert.deepEqual(calls, [
    "ipset version",
    "ipvsadm -Ln --exact",
    "ipvsadm -R < -A -t 198.51.100.0:20000 -s lblcr",
  ]);
  assert.ok(!messages.includes("IPVS scheduler not specified, use rr by default"));
  const rr = await start({
    "ipset version": "ipset v7.17, protocol version: 7\n",
    "ipvsadm -Ln --exact": HEADER,
  });
  assert.ok(rr.messages.includes("IPVS scheduler not specified, use rr by default"));
  assert.equal(rr.calls[2], "ipvsadm -R < -A -t 198.51.100.0:20000 -s rr");
});

test("the sysctls of NewProxier: conn_reuse_mode only on kernels 4.1 to 5.8, strict ARP adds arp_ignore and arp_announce", () => {
  const names = (release: string, strictARP = false) =>
    sysctlsFor(release, strictARP).map((s) => `${s.name}=${s.value}`);
  const always = [
    `${SYSCTL.expireNoDestConn}=1`,
    `${SYSCTL.expireQuiescentTemplate}=1`,
    `${SYSCTL.ipForward}=1`,
  ];
  assert.deepEqual(names("6.1.0-28-cloud-amd64"), [`${SYSCTL.vsConntrack}=1`, ...always]);
  assert.deepEqual(names("5.8.18"), [`${SYSCTL.vsConntrack}=1`, `${SYSCTL.connReuseMode}=0`, ...always]);
  assert.deepEqual(names("4.1.0"), [`${SYSCTL.vsConntrack}=1`, `${SYSCTL.connReuseMode}=0`, ...always]);
  assert.deepEqual(names("4.0.9"), [`${SYSCTL.vsConntrack}=1`, ...always]);
  assert.deepEqual(names("5.9.0"), [`${SYSCTL.vsConntrack}=1`, ...always]);
  assert.deepEqual(names("6.1.0", true).slice(-2), [`${SYSCTL.arpIgnore}=1`, `${SYSCTL.arpAnnounce}=2`]);
});
