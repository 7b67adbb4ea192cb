import { moduleArgv } from "../self.ts";

/** argv that runs this program's CLI with the current Node binary. */
export function selfArgv(args: readonly string[]): string[] {
  return moduleArgv(import.meta.url, "./main.ts", args);
}
