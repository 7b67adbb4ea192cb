import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { cliStderr } from "../../support/cli.ts";

const dir = mkdtempSync(join(tmpdir(), "kpt-run-flags-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("run: flags checked before anything starts", () => {
  it("refuses a non-loopback --web-bind-address without --web-allow-remote", async () => {
    const out = join(dir, "remote.yaml");
    const r = await cliStderr("run", "--web-bind-address", "0.0.0.0:10260", "--write-config-to", out);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--web-bind-address: "0\.0\.0\.0:10260" is not a loopback address/);
    assert.match(r.stderr, /--web-allow-remote/);
    assert.ok(!existsSync(out));
  });

  it("accepts a non-loopback --web-bind-address with --web-allow-remote, and loopback without", async () => {
    for (const args of [
      ["--web-bind-address", "0.0.0.0:10260", "--web-allow-remote"],
      ["--web-bind-address", "127.0.0.1:10260"],
      ["--web-bind-address", "[::1]:10260"],
      ["--web-bind-address", ":10260"],
    ]) {
      const out = join(dir, `ok-${args.join("")}.yaml`);
      const r = await cliStderr("run", ...args, "--write-config-to", out);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(existsSync(out));
    }
  });

  it("refuses an unparseable --web-bind-address at start, not at the first bind", async () => {
    for (const bad of ["foo", "foo:80", "1.2.3.4:70000"]) {
      const r = await cliStderr("run", "--web-bind-address", bad, "--write-config-to", join(dir, "bad.yaml"));
      assert.equal(r.code, 1, bad);
      assert.match(r.stderr, /invalid configuration:\n {2}- --web-bind-address: /, bad);
    }
  });
});
