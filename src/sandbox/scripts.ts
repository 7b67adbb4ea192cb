import { moduleArgv } from "../self.ts";

/** argv that runs one of the sandbox's scripts with this Node binary, compiled or through tsx. */
export function nodeScriptArgv(script: "pod-server.ts" | "probe.ts", args: readonly string[]): string[] {
  return moduleArgv(import.meta.url, `./${script}`, args);
}
