import { fileURLToPath } from "node:url";

/**
 * argv that runs one of the sandbox's TypeScript scripts with this Node binary. tsx is passed
 * by resolved URL so the script runs whatever the caller's working directory is.
 */
export function nodeScriptArgv(script: "pod-server.ts" | "probe.ts", args: readonly string[]): string[] {
  const scriptPath = fileURLToPath(new URL(`./${script}`, import.meta.url));
  return [process.execPath, "--import", import.meta.resolve("tsx"), scriptPath, ...args];
}
