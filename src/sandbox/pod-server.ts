/*
 * A pod's workload, run inside the pod's network namespace:
 *   node --import tsx src/sandbox/pod-server.ts --pod NAME [--http PORT] [--udp PORT]
 * HTTP answers every request with {"pod", "client"} and closes the connection, so each request
 * is a new connection and load-balancing across endpoints is visible. UDP answers each datagram
 * with the same JSON. Prints one JSON line with the bound ports once both listen.
 */
import { createSocket } from "node:dgram";
import type { Socket } from "node:dgram";
import { createServer } from "node:http";
import type { Server } from "node:http";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    pod: { type: "string" },
    http: { type: "string" },
    udp: { type: "string" },
  },
  strict: true,
});

const pod = values.pod;
if (pod === undefined || pod === "") {
  console.error("pod-server: --pod NAME is required");
  process.exit(2);
}

/** The address as the pod saw it; dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d. */
function plainAddress(address: string | undefined): string {
  if (address === undefined) return "";
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice("::ffff:".length) : address;
}

function port(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    console.error(`pod-server: ${flag} must be a port number, got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return value;
}

function startHttp(listenPort: number): Promise<Server> {
  const server = createServer((request, response) => {
    const body = JSON.stringify({ pod, client: plainAddress(request.socket.remoteAddress) });
    response.writeHead(200, { "content-type": "application/json", connection: "close" });
    response.end(`${body}\n`);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: listenPort, host: "::", ipv6Only: false }, () => resolve(server));
  });
}

function startUdp(listenPort: number): Promise<Socket> {
  const socket = createSocket({ type: "udp6", ipv6Only: false });
  socket.on("message", (_message, remote) => {
    const body = JSON.stringify({ pod, client: plainAddress(remote.address) });
    socket.send(body, remote.port, remote.address);
  });
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(listenPort, "::", () => resolve(socket));
  });
}

const httpPort = port(values.http, "--http");
const udpPort = port(values.udp, "--udp");
const http = httpPort === undefined ? undefined : await startHttp(httpPort);
const udp = udpPort === undefined ? undefined : await startUdp(udpPort);

const stop = (): void => {
  http?.close();
  udp?.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

console.log(JSON.stringify({ listening: { pod, http: httpPort ?? null, udp: udpPort ?? null } }));
