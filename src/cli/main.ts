import { main } from "./program.ts";

// `kube-proxy-ts trace … | head`: the reader went away, which ends the command, quietly.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  process.stderr.write(`kube-proxy-ts: cannot write the output: ${error.message}\n`);
  process.exit(1);
});

const code = await main(process.argv.slice(2));
// A failed command must not leave anything running behind it (a daemon whose servers or
// watches outlived the error would look alive to its supervisor): exit now.
if (code !== 0) process.exit(code);
process.exitCode = code;
