import { main } from "./program.ts";

const code = await main(process.argv.slice(2));
// A failed command must not leave anything running behind it (a daemon whose servers or
// watches outlived the error would look alive to its supervisor): exit now.
if (code !== 0) process.exit(code);
process.exitCode = code;
