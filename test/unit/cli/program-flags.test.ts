import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { cliStderr } from "../../support/cli.ts";

const dir = mkdtempSync(join(tmpdir(), "kpt-program-flags-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const CLI = fileURLToPath(new URL("../../../src/cli/main.ts", import.meta.url));

/** The CLI's help for argv, from a process of its own. */
function help(...argv: string[]): string {
  return execFileSync(process.execPath, ["--import", "tsx", CLI, ...argv], {
    encoding: "utf8",
    timeout: 60_000,
  });
}

// The daemon's flags are declared only on the command a start runs: each must still have them.
describe("the daemon's flags, on the command that runs", () => {
  for (const command of ["run", "render", "trace", "explain", "migrate", "diff"]) {
    it(`${command} parses them`, async () => {
      const r = await cliStderr(command, "--masquerade-all", "maybe");
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /--masquerade-all takes true or false, not "maybe"/);
    });
  }

  it("the default command takes them without its name", async () => {
    const file = join(dir, "default.yaml");
    const r = await cliStderr("--cluster-cidr", "10.244.0.0/16", "--write-config-to", file);
    assert.equal(r.code, 0, r.stderr);
    assert.match(readFileSync(file, "utf8"), /clusterCIDR: 10\.244\.0\.0\/16/);
  });

  it("a command without them rejects them", async () => {
    const r = await cliStderr("demo", "--cluster-cidr", "10.244.0.0/16");
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /unknown option '--cluster-cidr'/);
  });

  it("`X --help` and `help X` list them; the program's --help lists the commands", () => {
    for (const argv of [
      ["explain", "--help"],
      ["help", "explain"],
    ]) {
      const text = help(...argv);
      assert.match(text, /--cluster-cidr <value>/, argv.join(" "));
      assert.match(text, /--masquerade-all \[bool\]/, argv.join(" "));
    }
    assert.match(help("--help"), /render \[options\]/);
  });
});
