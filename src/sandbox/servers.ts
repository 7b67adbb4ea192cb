import type { BackgroundProcess } from "../kernel/spawn.ts";
import { nodeScriptArgv } from "./scripts.ts";
import type { Sandbox } from "./topology.ts";

export interface PodServerOptions {
  /** TCP port for the HTTP server (default 80); null for none. */
  readonly httpPort?: number | null;
  /** UDP port for the echo server (default 80); null for none. */
  readonly udpPort?: number | null;
  /** How long to wait for the server to report it listens (default 15 s: Node start-up on a busy box). */
  readonly readyTimeoutMs?: number;
}

export interface PodServer {
  readonly pod: string;
  readonly httpPort: number | null;
  readonly udpPort: number | null;
  readonly process: BackgroundProcess;
}

/**
 * Starts the pod workload (see pod-server.ts) inside the pod's namespace and waits until it
 * listens. The sandbox stops it on dispose or when the pod is removed.
 */
export async function startPodServer(
  sandbox: Sandbox,
  pod: string,
  options: PodServerOptions = {},
): Promise<PodServer> {
  const httpPort = options.httpPort === undefined ? 80 : options.httpPort;
  const udpPort = options.udpPort === undefined ? 80 : options.udpPort;
  const args = ["--pod", pod];
  if (httpPort !== null) args.push("--http", String(httpPort));
  if (udpPort !== null) args.push("--udp", String(udpPort));
  const child = sandbox.spawn(pod, nodeScriptArgv("pod-server.ts", args));
  try {
    await child.waitForLine(/"listening"/, options.readyTimeoutMs ?? 15_000);
  } catch (error) {
    await child.stop();
    throw error;
  }
  return { pod, httpPort, udpPort, process: child };
}
