/*
 * Builds the ipvs VM image (scripts/vm/build-image.sh) and boots it once under QEMU with the
 * serial console on stdout, folding every console line into a ConsoleState. Every stage is bounded:
 * the build, the time to the init's first line, the silence between lines and the whole run; QEMU
 * runs under `timeout -k` as well, since on a failure it can pause instead of exiting.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { EMPTY_CONSOLE, consumeLine } from "./console.ts";
import type { ConsoleState } from "./console.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

export interface VmImage {
  readonly vmlinux: string;
  readonly initrd: string;
  readonly buildMs: number;
}

export interface Limits {
  readonly buildMs: number;
  /** From QEMU's start to the init's `KPT-VM booted` line. */
  readonly bootMs: number;
  /** Longest silence on the console once booted. */
  readonly silenceMs: number;
  readonly totalMs: number;
}

export type Accel = "kvm" | "tcg";

export interface VmRun {
  readonly accel: Accel;
  readonly state: ConsoleState;
  readonly exit: { code: number | null; signal: string | null; timedOut: boolean; why?: string };
  /** The last console lines, for failure messages. */
  readonly tail: readonly string[];
  readonly wallMs: number;
}

function run(
  argv: readonly string[],
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export async function buildImage(limits: Limits): Promise<VmImage> {
  const started = Date.now();
  const { code, stdout, stderr } = await run(["bash", "scripts/vm/build-image.sh"], limits.buildMs);
  const field = (name: string): string | undefined =>
    stdout
      .split("\n")
      .find((l) => l.startsWith(`${name}=`))
      ?.slice(name.length + 1);
  const vmlinux = field("vmlinux");
  const initrd = field("initrd");
  if (code !== 0 || vmlinux === undefined || initrd === undefined) {
    throw new Error(
      `scripts/vm/build-image.sh failed (exit ${code}):\n${stderr.trimEnd().split("\n").slice(-30).join("\n")}`,
    );
  }
  return { vmlinux, initrd, buildMs: Date.now() - started };
}

/** KVM only where the CPU has hardware virtualisation and the device opens; TCG otherwise. */
export function preferredAccel(): Accel {
  if (!existsSync("/dev/kvm")) return "tcg";
  const flags = readFileSync("/proc/cpuinfo", "utf8");
  return /^flags\s*:.*\b(vmx|svm)\b/m.test(flags) ? "kvm" : "tcg";
}

export function qemuArgv(
  image: VmImage,
  accel: Accel,
  cmdline: readonly string[],
  totalMs: number,
): string[] {
  return [
    "timeout",
    "-k",
    "10",
    String(Math.ceil(totalMs / 1000)),
    "qemu-system-x86_64",
    "-accel",
    accel === "kvm" ? "kvm" : "tcg,thread=multi",
    ...(accel === "kvm" ? ["-cpu", "host"] : []),
    "-M",
    "pc",
    "-smp",
    "2",
    "-m",
    "1536",
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-serial",
    "stdio",
    "-no-reboot",
    "-kernel",
    image.vmlinux,
    "-initrd",
    image.initrd,
    "-append",
    ["console=ttyS0", "quiet", "panic=-1", ...cmdline].join(" "),
  ];
}

const TAIL_LINES = 40;

export function boot(
  image: VmImage,
  accel: Accel,
  cmdline: readonly string[],
  limits: Limits,
): Promise<VmRun> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const argv = qemuArgv(image, accel, cmdline, limits.totalMs);
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    let state = EMPTY_CONSOLE;
    const tail: string[] = [];
    let partial = "";
    let why: string | undefined;
    const stop = (reason: string): void => {
      if (why !== undefined) return;
      why = reason;
      child.kill("SIGKILL");
    };
    let silence: NodeJS.Timeout | undefined;
    const armSilence = (): void => {
      clearTimeout(silence);
      silence = setTimeout(
        () => stop(`no console output for ${limits.silenceMs / 1000} s`),
        limits.silenceMs,
      );
    };
    const bootTimer = setTimeout(() => {
      if (state.bootedAt === undefined) stop(`no "KPT-VM booted" line within ${limits.bootMs / 1000} s`);
    }, limits.bootMs);
    const total = setTimeout(() => stop(`the whole run exceeded ${limits.totalMs / 1000} s`), limits.totalMs);
    const onData = (chunk: Buffer): void => {
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        tail.push(line.replace(/\r$/, ""));
        if (tail.length > TAIL_LINES) tail.shift();
        const before = state.bootedAt;
        const finished = state.results.length;
        state = consumeLine(state, line);
        // Progress for whoever watches a long CI log: one line per guest test as it finishes.
        for (const r of state.results.slice(finished)) {
          process.stderr.write(`vm: ${r.status} ${r.path.join(" › ")} (${r.ms} ms)\n`);
        }
        if (before === undefined && state.bootedAt !== undefined) armSilence();
      }
      if (state.bootedAt !== undefined) armSilence();
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      for (const t of [silence, bootTimer, total]) clearTimeout(t);
      if (partial !== "") {
        tail.push(partial);
        state = consumeLine(state, partial);
      }
      const timedOut = why !== undefined || code === 124 || code === 137;
      resolve({
        accel,
        state,
        exit: { code, signal, timedOut, ...(why === undefined ? {} : { why }) },
        tail: tail.slice(-TAIL_LINES),
        wallMs: Date.now() - started,
      });
    });
  });
}
