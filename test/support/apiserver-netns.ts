import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BackgroundProcess } from "../../src/kernel/spawn.ts";
import type { Sandbox } from "../../src/sandbox/topology.ts";
import { kubeconfigYaml } from "./apiserver-fixtures.ts";
import type { SecureServer } from "./apiserver-fixtures.ts";

/*
 * The in-process test apiserver, reachable from inside a sandbox namespace at
 * https://127.0.0.1:6443 without touching the root namespace's routes: a filesystem unix socket
 * is visible from every network namespace, so the test process relays unix → 127.0.0.1:<port>
 * and a tiny Node process in the namespace relays 127.0.0.1:6443 → unix. TLS passes through
 * unchanged (the test certificate is valid for 127.0.0.1).
 */

export const IN_NAMESPACE_PORT = 6443;

/** Runs inside the namespace: accept on 127.0.0.1:port, pipe each connection to the socket. */
const RELAY_SCRIPT = `
const net = require("node:net");
const [socketPath, port] = process.argv.slice(1);
const server = net.createServer((client) => {
  const upstream = net.connect(socketPath);
  client.pipe(upstream).pipe(client);
  const close = () => { client.destroy(); upstream.destroy(); };
  client.on("error", close); upstream.on("error", close);
  client.on("close", close); upstream.on("close", close);
});
server.listen(Number(port), "127.0.0.1", () => process.stdout.write("listening\\n"));
process.on("SIGTERM", () => process.exit(0));
`;

export class NetnsApiBridge {
  private readonly connections = new Set<net.Socket>();
  private down = false;
  private relay: BackgroundProcess | null = null;

  private constructor(
    private readonly dir: string,
    private readonly unixServer: net.Server,
    /** A kubeconfig for use inside the namespace (server https://127.0.0.1:6443). */
    readonly kubeconfig: string,
  ) {}

  /**
   * Starts the relays for `secure` (from startSecureServer) into `role`'s namespace. The
   * kubeconfig uses the same client certificate files as the server's own kubeconfig.
   */
  static async start(sandbox: Sandbox, role: string, secure: SecureServer): Promise<NetnsApiBridge> {
    const target = new URL(secure.server.url);
    const dir = mkdtempSync(join(tmpdir(), "kpt-apibridge-"));
    const socketPath = join(dir, "api.sock");
    const kubeconfig = join(dir, "kubeconfig");
    writeFileSync(
      kubeconfig,
      kubeconfigYaml(
        `https://127.0.0.1:${IN_NAMESPACE_PORT}`,
        { "certificate-authority": secure.pki.ca.certFile },
        { "client-certificate": secure.pki.client.certFile, "client-key": secure.pki.client.keyFile },
      ),
    );
    const unixServer = net.createServer();
    const bridge = new NetnsApiBridge(dir, unixServer, kubeconfig);
    unixServer.on("connection", (client) => bridge.accept(client, target));
    try {
      await new Promise<void>((resolve, reject) => {
        unixServer.once("error", reject);
        unixServer.listen(socketPath, () => resolve());
      });
      bridge.relay = sandbox.spawn(role, [
        process.execPath,
        "-e",
        RELAY_SCRIPT,
        socketPath,
        String(IN_NAMESPACE_PORT),
      ]);
      await bridge.relay.waitForLine(/listening/, 15_000);
      return bridge;
    } catch (err) {
      await bridge.close();
      throw err;
    }
  }

  private accept(client: net.Socket, target: URL): void {
    if (this.down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(target.port), target.hostname);
    this.connections.add(client);
    this.connections.add(upstream);
    client.pipe(upstream).pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
      this.connections.delete(client);
      this.connections.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on("error", close);
      s.on("close", close);
    }
  }

  /**
   * The apiserver goes away as in a restart: every open connection is cut and new ones are
   * closed at once until `restore`.
   */
  outage(): void {
    this.down = true;
    for (const s of this.connections) s.destroy();
    this.connections.clear();
  }

  restore(): void {
    this.down = false;
  }

  async close(): Promise<void> {
    this.outage();
    try {
      await this.relay?.stop(2_000);
      await new Promise<void>((resolve) => this.unixServer.close(() => resolve()));
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}
