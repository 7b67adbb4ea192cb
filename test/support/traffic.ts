import { fileURLToPath } from "node:url";
import type { BackgroundProcess } from "../../src/kernel/spawn.ts";
import type { Sandbox } from "../../src/sandbox/topology.ts";

/** Launches traffic-agent.ts (see there) inside sandbox namespaces. */

const AGENT = fileURLToPath(new URL("./traffic-agent.ts", import.meta.url));

export interface TrafficSummary {
  readonly answers: number;
  readonly byPod: Readonly<Record<string, number>>;
  readonly failures: readonly { readonly atMs: number; readonly error: string }[];
}

export interface ClientOptions {
  readonly host: string;
  readonly port: number;
  /** Fixed UDP source port (udp-stream only). */
  readonly sport?: number;
  readonly intervalMs?: number;
  readonly timeoutMs?: number;
  /** The client stops by itself after this long (the agent's default: 120 s). */
  readonly maxMs?: number;
}

function agent(sandbox: Sandbox, role: string, args: readonly string[]): BackgroundProcess {
  return sandbox.spawn(role, [process.execPath, "--import", import.meta.resolve("tsx"), AGENT, ...args]);
}

/** A TCP server in a pod that answers every line on a connection with the pod's name. */
export async function startEchoServer(
  sandbox: Sandbox,
  pod: string,
  port: number,
): Promise<BackgroundProcess> {
  const child = agent(sandbox, pod, ["echo-server", "--pod", pod, "--port", String(port)]);
  await child.waitForLine(/"listening"/, 30_000);
  return child;
}

export class TrafficClient {
  private constructor(private readonly child: BackgroundProcess) {}

  /** Starts a client and waits (bounded) for its first answer. */
  static async start(
    sandbox: Sandbox,
    role: string,
    mode: "hold" | "udp-stream" | "load",
    options: ClientOptions,
  ): Promise<TrafficClient> {
    const args = [mode, "--host", options.host, "--port", String(options.port)];
    if (options.sport !== undefined) args.push("--sport", String(options.sport));
    if (options.intervalMs !== undefined) args.push("--interval-ms", String(options.intervalMs));
    if (options.timeoutMs !== undefined) args.push("--timeout-ms", String(options.timeoutMs));
    if (options.maxMs !== undefined) args.push("--max-ms", String(options.maxMs));
    const child = agent(sandbox, role, args);
    try {
      await child.waitForLine(/"ready"/, 30_000);
    } catch (error) {
      await child.stop();
      throw error;
    }
    return new TrafficClient(child);
  }

  get running(): boolean {
    return this.child.running;
  }

  /** Waits (bounded) until an answer comes from `pod`. */
  async waitForAnswerFrom(pod: string, timeoutMs: number): Promise<void> {
    await this.child.waitForLine(new RegExp(`"answeredBy":${JSON.stringify(pod)}`), timeoutMs);
  }

  /** Stops the client and returns what it experienced. */
  async stop(): Promise<TrafficSummary> {
    await this.child.stop();
    const line = this.child.stdout.split("\n").find((candidate) => candidate.startsWith('{"summary"'));
    if (line === undefined) {
      throw new Error(`traffic client printed no summary; stderr: ${this.child.stderr.slice(-2000)}`);
    }
    return (JSON.parse(line) as { summary: TrafficSummary }).summary;
  }
}
