import { main } from "../../src/cli/program.ts";

/**
 * Runs the CLI in-process; returns its exit code and what it wrote to stderr. stdout is left
 * alone: it is the test runner's, which reports through it.
 */
export async function cliStderr(...argv: string[]): Promise<{ code: number; stderr: string }> {
  const write = process.stderr.write.bind(process.stderr);
  let stderr = "";
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += chunk.toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await main(argv), stderr };
  } finally {
    process.stderr.write = write;
  }
}
