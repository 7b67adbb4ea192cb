/*
 * The bench every scenario shares (building namespaces and starting agents costs seconds each
 * under emulation): the seed's two nginx pods, three more pods, and two external clients.
 * main.ts builds it in the first test and removes it after the last.
 */
import { Lab } from "./lab.ts";

export const SEED_PODS = [
  { name: "nginx-6799fc88d8-rmfs8", ip: "10.244.0.9" },
  { name: "nginx-6799fc88d8-7z554", ip: "10.244.0.10" },
] as const;
export const EXTRA_PODS = [
  { name: "pod-3", ip: "10.244.0.11" },
  { name: "pod-4", ip: "10.244.0.12" },
  { name: "pod-5", ip: "10.244.0.13" },
] as const;
/** `ext` on the node's LAN (192.168.50.100), `ext2` on a second one (192.168.60.100). */
export const CLIENTS = [
  { name: "ext", lan: "192.168.50" },
  { name: "ext2", lan: "192.168.60" },
] as const;

let built: Lab | undefined;

export async function buildWorld(): Promise<Lab> {
  const lab = new Lab();
  built = lab;
  await Promise.all([
    ...[...SEED_PODS, ...EXTRA_PODS].map((p) => lab.addPod(p.name, p.ip)),
    ...CLIENTS.map((c) => lab.addClient(c.name, c.lan)),
  ]);
  return lab;
}

export function world(): Lab {
  if (built === undefined || built.pods.size < SEED_PODS.length + EXTRA_PODS.length) {
    throw new Error("the shared bench was not built (see the first test's failure)");
  }
  return built;
}

export async function disposeWorld(): Promise<void> {
  await built?.dispose();
}
