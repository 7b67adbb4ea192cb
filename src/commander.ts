import { createRequire } from "node:module";
import type * as Commander from "commander";

/**
 * commander, required as the CommonJS package it is. Importing it as ESM goes through its
 * `esm.mjs` wrapper and Node's CommonJS export lexer, which costs every CLI start about 8 ms more
 * (measured: 22–27 ms through `import`, 14–18 ms through `require`, on the development machine).
 */
const commander = createRequire(import.meta.url)("commander") as typeof Commander;

export const Command = commander.Command;
export type Command = Commander.Command;
export const CommanderError = commander.CommanderError;
export const Option = commander.Option;
export type Option = Commander.Option;
export const InvalidArgumentError = commander.InvalidArgumentError;
