import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { ProcessRunner } from "../../src/kernel/exec.ts";
import type { ExecResult } from "../../src/kernel/exec.ts";
import { spawnBackground } from "../../src/kernel/spawn.ts";
import type { BackgroundProcess } from "../../src/kernel/spawn.ts";
import type { Sandbox } from "../../src/sandbox/topology.ts";

/*
 * The image that `npm run image` built (build/image/oci), run the way a kubelet runs the
 * DaemonSet's pod: unpacked by umoci into an OCI runtime bundle, its config made privileged
 * (every capability, no seccomp, no masked or read-only paths, /sys writable), the ConfigMap's
 * folder, the host's xtables lock and /lib/modules mounted as the DaemonSet mounts them, then
 * started by crun inside a sandbox node's network namespace (hostNetwork: the node's namespace).
 */

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const IMAGE_LAYOUT = join(ROOT, "build/image/oci");
const PACKAGE = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
export const IMAGE_REF = `${IMAGE_LAYOUT}:kube-proxy-ts:${PACKAGE.version}`;
const DEPLOY = join(ROOT, "deploy");

/**
 * crun refuses a hybrid cgroup layout (v1 controllers plus a cgroup2 tree with controllers at
 * /sys/fs/cgroup/unified), which some CI machines have, even with --cgroup-manager=disabled.
 * Each crun call therefore runs in a private mount namespace (unshare) where this script hides
 * that tree under an empty tmpfs, then runs crun with its argv and passes its exit on; nothing
 * outside that namespace changes. The containers get no cgroup of their own either way.
 */
const CRUN_WRAPPER = `
const { execFileSync, spawn } = require("node:child_process");
const { existsSync } = require("node:fs");
if (existsSync("/sys/fs/cgroup/unified/cgroup.controllers"))
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=4k", "kpt-no-cgroup2", "/sys/fs/cgroup/unified"]);
const child = spawn("crun", ["--cgroup-manager=disabled", ...process.argv.slice(1)], { stdio: "inherit" });
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => child.kill(signal));
child.on("exit", (code, signal) => process.exit(code ?? (signal === null ? 1 : 128)));
`;

function crun(...args: string[]): string[] {
  return ["unshare", "--mount", "--propagation", "private", process.execPath, "-e", CRUN_WRAPPER, ...args];
}

/** Capability names in the kernel's bit order (Linux 5.9+: up to CAP_CHECKPOINT_RESTORE). */
const CAPABILITY_NAMES = [
  "CHOWN",
  "DAC_OVERRIDE",
  "DAC_READ_SEARCH",
  "FOWNER",
  "FSETID",
  "KILL",
  "SETGID",
  "SETUID",
  "SETPCAP",
  "LINUX_IMMUTABLE",
  "NET_BIND_SERVICE",
  "NET_BROADCAST",
  "NET_ADMIN",
  "NET_RAW",
  "IPC_LOCK",
  "IPC_OWNER",
  "SYS_MODULE",
  "SYS_RAWIO",
  "SYS_CHROOT",
  "SYS_PTRACE",
  "SYS_PACCT",
  "SYS_ADMIN",
  "SYS_BOOT",
  "SYS_NICE",
  "SYS_RESOURCE",
  "SYS_TIME",
  "SYS_TTY_CONFIG",
  "MKNOD",
  "LEASE",
  "AUDIT_WRITE",
  "AUDIT_CONTROL",
  "SETFCAP",
  "MAC_OVERRIDE",
  "MAC_ADMIN",
  "SYSLOG",
  "WAKE_ALARM",
  "BLOCK_SUSPEND",
  "AUDIT_READ",
  "PERFMON",
  "BPF",
  "CHECKPOINT_RESTORE",
].map((c) => `CAP_${c}`);

/**
 * A privileged container gets every capability its runtime has: the bounding set of this
 * process (a test machine that is itself a container may lack some, and asking for more fails).
 */
function privilegedCapabilities(): string[] {
  const line = readFileSync("/proc/self/status", "utf8").match(/^CapBnd:\s*([0-9a-f]+)$/m);
  if (line?.[1] === undefined) throw new Error("/proc/self/status has no CapBnd line");
  const mask = BigInt(`0x${line[1]}`);
  return CAPABILITY_NAMES.filter((_, bit) => (mask >> BigInt(bit)) & 1n);
}

interface Manifest {
  readonly kind?: string;
  readonly data?: Record<string, string>;
  readonly spec?: {
    readonly template?: {
      readonly spec?: {
        readonly containers?: readonly { readonly name: string; readonly args?: readonly string[] }[];
      };
    };
  };
}

function deployDocument(file: string, kind: string): Manifest {
  const docs = parseAllDocuments(readFileSync(join(DEPLOY, file), "utf8")).map((d) => d.toJS() as Manifest);
  const doc = docs.find((d) => d.kind === kind);
  if (doc === undefined) throw new Error(`deploy/${file} has no ${kind}`);
  return doc;
}

/** The DaemonSet container's args with `$(NODE_NAME)` expanded, as the kubelet does. */
export function daemonSetArgs(nodeName: string): string[] {
  const container = deployDocument("daemonset.yaml", "DaemonSet").spec?.template?.spec?.containers?.[0];
  if (container?.args === undefined) throw new Error("deploy/daemonset.yaml: the container has no args");
  return container.args.map((a) => a.replaceAll("$(NODE_NAME)", nodeName));
}

/** deploy/configmap.yaml's config.conf, verbatim. */
export function configMapConfig(): string {
  const text = deployDocument("configmap.yaml", "ConfigMap").data?.["config.conf"];
  if (text === undefined) throw new Error("deploy/configmap.yaml has no config.conf");
  return text;
}

export function imageBuilt(): boolean {
  return existsSync(join(IMAGE_LAYOUT, "index.json"));
}

export interface ContainerOptions {
  /** Replaces the image's entrypoint, as a pod's `command` does. */
  readonly command?: readonly string[];
  /** The container's args after the entrypoint (the DaemonSet's `args`). */
  readonly args: readonly string[];
  /** Read-only volumes (a ConfigMap, a service account token): mount path → file name → text. */
  readonly volumes: Readonly<Record<string, Readonly<Record<string, string>>>>;
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * One unpacked copy of the image (umoci unpack takes a few seconds) from which containers are
 * started; `dispose` removes the bundle and every container that is left.
 */
export class ImageBundle {
  private readonly containers = new Set<string>();
  private readonly runner = new ProcessRunner();

  private constructor(private readonly dir: string) {}

  static async unpack(): Promise<ImageBundle> {
    const bundle = new ImageBundle(mkdtempSync(join(tmpdir(), "kpt-image-")));
    try {
      await bundle.runner.run(["umoci", "unpack", "--image", IMAGE_REF, join(bundle.dir, "bundle")], {
        timeoutMs: 120_000,
      });
      return bundle;
    } catch (error) {
      await bundle.dispose();
      throw error;
    }
  }

  private get bundle(): string {
    return join(this.dir, "bundle");
  }

  /** The image's own process spec (entrypoint, env, user, cwd) as umoci unpacked it. */
  imageProcess(): { args: string[]; env: string[]; user: { uid: number; gid: number }; cwd: string } {
    const config = JSON.parse(readFileSync(join(this.bundle, "config.json"), "utf8")) as {
      process: { args: string[]; env: string[]; user: { uid: number; gid: number }; cwd: string };
    };
    return config.process;
  }

  /** Starts a container in `role`'s network namespace; stop it with `stop`. */
  start(
    sandbox: Sandbox,
    role: string,
    options: ContainerOptions,
  ): { id: string; process: BackgroundProcess } {
    const { id, argv } = this.prepare(sandbox, role, options);
    return { id, process: spawnBackground(argv) };
  }

  /** Runs a container in `role`'s namespace to its end (throws on a non-zero exit), then removes it. */
  async run(
    sandbox: Sandbox,
    role: string,
    options: ContainerOptions,
    timeoutMs: number,
  ): Promise<ExecResult> {
    const { id, argv } = this.prepare(sandbox, role, options);
    try {
      return await this.runner.run(argv, { timeoutMs });
    } finally {
      await this.remove(id);
    }
  }

  private prepare(sandbox: Sandbox, role: string, options: ContainerOptions): { id: string; argv: string[] } {
    const id = `kpt-image-${randomBytes(4).toString("hex")}`;
    const volumes = Object.entries(options.volumes).map(([destination, files], index) => {
      const source = join(this.dir, `${id}-volume-${index}`);
      mkdirSync(source);
      for (const [name, text] of Object.entries(files)) writeFileSync(join(source, name), text);
      return { destination, source };
    });
    const specFile = join(this.dir, `${id}.json`);
    writeFileSync(
      specFile,
      JSON.stringify(this.containerSpec(options, volumes, sandbox.node(role).netns), null, 2),
    );
    this.containers.add(id);
    // One bundle (the unpacked root filesystem), one runtime config per container (--config).
    return {
      id,
      argv: crun("run", "--bundle", this.bundle, "--config", specFile, id),
    };
  }

  /** SIGTERM to the container's process, as the kubelet stops a pod, then removes it. */
  async stop(id: string, process: BackgroundProcess, timeoutMs = 10_000): Promise<void> {
    if (process.running) {
      await this.runner.run(crun("kill", id, "TERM"), { timeoutMs: 10_000 }).catch(() => undefined);
      const deadline = Date.now() + timeoutMs;
      while (process.running && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    }
    await process.stop(5_000);
    await this.remove(id);
  }

  private async remove(id: string): Promise<void> {
    if (!this.containers.has(id)) return;
    await this.runner.run(crun("delete", "--force", id), { timeoutMs: 10_000 }).catch(() => undefined);
    this.containers.delete(id);
  }

  async dispose(): Promise<void> {
    try {
      for (const id of [...this.containers]) await this.remove(id);
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  private containerSpec(
    options: ContainerOptions,
    volumes: readonly { destination: string; source: string }[],
    netns: string,
  ): Record<string, unknown> {
    const spec = JSON.parse(readFileSync(join(this.bundle, "config.json"), "utf8")) as {
      process: { args: string[]; env: string[]; terminal?: boolean; capabilities?: unknown };
      mounts: { destination: string; type: string; source: string; options?: string[] }[];
      linux: {
        namespaces: { type: string; path?: string }[];
        maskedPaths?: string[];
        readonlyPaths?: string[];
        seccomp?: unknown;
      };
    };
    const entrypoint = options.command ?? spec.process.args.slice(0, 2);
    spec.process.args = [...entrypoint, ...options.args];
    spec.process.env = [
      ...spec.process.env,
      ...Object.entries(options.env ?? {}).map(([k, v]) => `${k}=${v}`),
    ];
    spec.process.terminal = false;
    const capabilities = privilegedCapabilities();
    spec.process.capabilities = {
      bounding: capabilities,
      effective: capabilities,
      permitted: capabilities,
      inheritable: capabilities,
    };
    // hostNetwork: the node's namespace, joined by path (crun runs in the root namespace: `ip
    // netns exec` would remount /sys without the cgroup tree crun inspects); the rest are the
    // pod's own.
    spec.linux.namespaces = [
      ...spec.linux.namespaces.filter((n) => n.type !== "network"),
      { type: "network", path: `/run/netns/${netns}` },
    ];
    spec.linux.maskedPaths = [];
    spec.linux.readonlyPaths = [];
    delete spec.linux.seccomp;
    // No cgroup of its own (see CRUN_WRAPPER), so no cgroup filesystem either.
    spec.mounts = spec.mounts.filter((m) => m.destination !== "/sys/fs/cgroup");
    for (const mount of spec.mounts)
      if (mount.destination === "/sys") mount.options = (mount.options ?? []).filter((o) => o !== "ro");
    if (!existsSync("/run/xtables.lock")) writeFileSync("/run/xtables.lock", "");
    spec.mounts.push(...volumes.map((v) => ({ ...v, type: "bind", options: ["rbind", "ro"] })), {
      destination: "/run/xtables.lock",
      type: "bind",
      source: "/run/xtables.lock",
      options: ["bind"],
    });
    // A machine without kernel modules on disk (a VM or container with a built-in kernel) has
    // nothing to mount; modprobe then fails inside the container as it would on such a node.
    if (existsSync("/lib/modules"))
      spec.mounts.push({
        destination: "/lib/modules",
        type: "bind",
        source: "/lib/modules",
        options: ["rbind", "ro"],
      });
    return spec;
  }
}
