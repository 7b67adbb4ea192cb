import { fileURLToPath } from "node:url";

/** True when this is the compiled build (dist/), false when the sources run through tsx (tests). */
export const COMPILED = import.meta.url.endsWith(".js");

/**
 * argv that runs a module of this program, named relative to `from`, with the current Node
 * binary: the compiled `.js` as it is, or the `.ts` source through tsx (resolved by URL, any cwd).
 */
export function moduleArgv(from: string, module: string, args: readonly string[]): string[] {
  const path = fileURLToPath(new URL(COMPILED ? module.replace(/\.ts$/, ".js") : module, from));
  return COMPILED
    ? [process.execPath, path, ...args]
    : [process.execPath, "--import", import.meta.resolve("tsx"), path, ...args];
}
