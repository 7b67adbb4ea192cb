import { fileURLToPath } from "node:url";

/** argv that runs this program's CLI with the current Node binary (tsx resolved by URL, any cwd). */
export function selfArgv(args: readonly string[]): string[] {
  const main = fileURLToPath(new URL("./main.ts", import.meta.url));
  return [process.execPath, "--import", import.meta.resolve("tsx"), main, ...args];
}
