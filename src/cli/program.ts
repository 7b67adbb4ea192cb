import { Command, CommanderError } from "../commander.ts";
import { ConfigError, KubeProxyError } from "../errors.ts";
import { registerProxyFlags as registerAllProxyFlags } from "../config/flags.ts";
import { VERSION } from "../version.ts";

/** The commands that take the daemon's flags (the configuration they render, trace or check). */
const PROXY_FLAG_COMMANDS = new Set(["run", "render", "trace", "explain", "migrate", "diff"]);

/**
 * Registers the daemon's ~60 flags on the one command that `argv` runs, and on no other: commander
 * parses only the chosen command's options, and declaring them on all six costs every start ~10 ms.
 * The chosen command is the first argument (or the one after `help`); anything else runs the
 * default command, `run`; the program's own `--help`/`--version` need none.
 */
function proxyFlagsFor(argv: readonly string[]): (command: Command) => Command {
  const [first, second] = argv;
  const named = first === "help" ? second : first;
  const chosen =
    named !== undefined && PROXY_FLAG_COMMANDS.has(named)
      ? named
      : ["help", "--help", "-h", "--version", "demo"].includes(first ?? "")
        ? undefined
        : "run";
  return (command) => (command.name() === chosen ? registerAllProxyFlags(command) : command);
}

/**
 * Every command is declared here; each action lazily imports its module. Only this file maps
 * errors to exit codes: our own errors print their message (exit 1), anything else is a bug.
 */
function buildProgram(argv: readonly string[]): Command {
  const registerProxyFlags = proxyFlagsFor(argv);
  const program = new Command("kube-proxy-ts")
    .description("A Kubernetes service proxy (upstream kube-proxy compatible) that explains itself.")
    .version(`kube-proxy-ts ${VERSION}`, "--version")
    .showHelpAfterError()
    .exitOverride();

  registerProxyFlags(
    program
      .command("run", { isDefault: true })
      .description(
        "Run the proxy daemon (the default command): watch Services/EndpointSlices and program the kernel.",
      )
      .option("--cleanup", "Remove every rule this proxy created and exit.")
      .option("--init-only", "Do privileged initialization (sysctls, conntrack) and exit.")
      .option("--write-config-to <file>", "Write the defaulted configuration to this file and exit.")
      .option(
        "--manifests <dir>",
        "Standalone: read Services, EndpointSlices and Nodes from this folder (watched) instead of an API server.",
      )
      .option(
        "--web-bind-address <ip:port>",
        "Serve the read-only web view here (off by default; a loopback address unless --web-allow-remote).",
      )
      .option(
        "--web-allow-remote",
        "Allow --web-bind-address to be a non-loopback address: the view has no authentication.",
      )
      .exitOverride(),
  ).action(async (options: Record<string, unknown>) => {
    const { runDaemonCommand } = await import("./run.ts");
    await runDaemonCommand(options);
  });

  registerProxyFlags(
    program
      .command("render")
      .description(
        "Print the iptables-restore payload(s) a full sync would write for the given objects; touches no kernel.",
      )
      .requiredOption(
        "-f, --filename <path>",
        "YAML/JSON file, folder, or - for stdin (repeatable).",
        collect,
        [],
      )
      .option(
        "--local-addresses <cidrs>",
        "The node's interface addresses (default: node IPs plus loopback).",
      )
      .option(
        "--ip-family <family>",
        "IPv4, IPv6 or dual (default: dual when any Service or the node has IPv6).",
      )
      .option("--nfacct [bool]", "Assume the nfacct counters exist (default true).")
      .option("--random-fully [bool]", "Assume MASQUERADE --random-fully is supported (default true).")
      .option(
        "--node-ruleset",
        "Print the node's whole ruleset after the sync, as iptables-save shows it: built-in chains with the daemon's jump rules, every table.",
      )
      .option("--skip-invalid", "Skip invalid objects (with a warning) instead of failing.")
      .option(
        "--upstream-test-settings",
        "Use the node and kernel of upstream's unit-test fake proxier (reproduces upstream goldens).",
      )
      .exitOverride(),
  ).action(async (options: Record<string, unknown>) => {
    const { renderCommand } = await import("./render.ts");
    process.stdout.write(await renderCommand(options));
  });

  registerProxyFlags(
    program
      .command("trace")
      .description(
        "Walk a packet through the node's rules (the live kernel, a dump, or objects rendered into the node's ruleset): chains, rules, endpoints with probabilities, the rule that decided, DNAT, masquerade.",
      )
      .option("--src <ip[:port]>", "Source address (and port) of the packet.")
      .option("--dst <ip:port>", "Destination address and port (IPv6 as [addr]:port).")
      .option("--proto <proto>", "tcp, udp or sctp (default tcp).")
      .option(
        "--from <origin>",
        "Where the packet comes from: pod, node or external (default: inferred from --src, the node's addresses and the pod CIDRs).",
      )
      .option("--state <state>", "NEW (default) or ESTABLISHED: the conntrack short-cut of an existing flow.")
      .option(
        "--flows <file>",
        "Trace every flow of this file (- for stdin) against one parse: one per line, `SRC DST [PROTO] [FROM] [STATE]` or a JSON object.",
      )
      .option(
        "--ruleset <file>",
        "Trace through this dump (- for stdin) instead of the live kernel: iptables-save, or for nftables nft -f / nft list / nft -j text.",
      )
      .option(
        "-f, --filename <path>",
        "Render the node's ruleset from the objects in this file or folder (- for stdin; repeatable) and trace through it.",
        collect,
        [],
      )
      .option("--manifests <dir>", "Like -f, for a folder of manifests.")
      .option(
        "--local-addresses <ips>",
        "The node's addresses (addrtype LOCAL); default: the live namespace's, the node's IPs when rendering, loopback only with --ruleset.",
      )
      .option("--nfacct [bool]", "When rendering: assume the nfacct counters exist (default true).")
      .option(
        "--random-fully [bool]",
        "When rendering: assume MASQUERADE --random-fully is supported (default true).",
      )
      .option(
        "--allow-incomplete",
        "Trace a ruleset even when nothing in it reaches the proxy's entry chains (the problems are printed first).",
      )
      .option(
        "--affinity <assume>",
        "Session affinity state: unknown (default, both ways) or new-client (no affinity entry yet).",
      )
      .option(
        "-o, --output <format>",
        "text (default) or json (docs/trace-json.md; JSON Lines with --flows).",
      )
      .exitOverride(),
  ).action(async (options: Record<string, unknown>) => {
    const { traceCommand } = await import("./trace.ts");
    process.stdout.write(await traceCommand(options));
  });

  registerProxyFlags(
    program
      .command("explain")
      .description(
        "One Service's rules: entry rules, KUBE-SVC shares, KUBE-SEP DNATs, masquerade, counters, conntrack flows per endpoint, and why it gets no traffic.",
      )
      .argument("<service>", "NAMESPACE/SERVICE[:PORT-NAME]")
      .option("--ruleset <file>", "Explain this iptables-save dump (- for stdin) instead of the live kernel.")
      .option(
        "--manifests <dir>",
        "Render the node's ruleset from the objects in this folder instead (no kernel).",
      )
      .option(
        "--api",
        "Render the rules from the API server's objects instead (--kubeconfig/--master; no kernel).",
      )
      .option("-f, --filename <path>", "Like --manifests, for a file or folder (repeatable).", collect, [])
      .option(
        "--ip-family <family>",
        "With --manifests/-f: IPv4 or IPv6 (default: the family that has the Service).",
      )
      .option("--no-conntrack", "Live kernel: do not count conntrack entries per endpoint.")
      .option("-o, --output <format>", "text (default) or json.")
      .exitOverride(),
  ).action(async (service: string, options: Record<string, unknown>) => {
    const { explainCommand } = await import("./explain.ts");
    process.stdout.write(await explainCommand(service, options));
  });

  registerProxyFlags(
    program
      .command("migrate")
      .description(
        "Report, per Service, what behaves differently after moving this node from one proxy mode to another (--from ipvs --to nftables).",
      )
      .requiredOption("--from <mode>", "The mode the node runs now (ipvs).")
      .requiredOption("--to <mode>", "The mode to move to (nftables).")
      .option(
        "-f, --filename <path>",
        "Services, EndpointSlices and the Node from this file or folder (repeatable).",
        collect,
        [],
      )
      .option("--manifests <dir>", "Like -f, for a folder.")
      .option("--api", "Services, EndpointSlices and the Node from the API server (--kubeconfig/--master).")
      .option(
        "--live",
        "Also read this node's kernel: IPVS schedulers and persistence, ARP sysctls, IPVS timeouts, addresses.",
      )
      .option("-o, --output <format>", "text (default) or json.")
      .exitOverride(),
  ).action(async (options: Record<string, unknown>) => {
    const { migrateCommand } = await import("./migrate.ts");
    process.stdout.write(await migrateCommand(options));
  });

  registerProxyFlags(
    program
      .command("diff")
      .description(
        "Compare the kernel's rules with what the proxy would write now for the given objects, per Service: missing, extra and changed chains and rules; foreign rules listed apart.",
      )
      .option(
        "-f, --filename <path>",
        "The objects (YAML/JSON file, folder, or - for stdin; repeatable).",
        collect,
        [],
      )
      .option("--manifests <dir>", "Like -f, for a folder of manifests.")
      .option(
        "--api",
        "The objects from the API server instead (--kubeconfig/--master, the daemon's selectors).",
      )
      .option(
        "--ruleset <file>",
        "Compare this iptables-save dump (- for stdin) instead of the live kernel (iptables mode; nftables mode reads the live table over netlink).",
      )
      .option(
        "--ip-family <family>",
        "IPv4, IPv6 or dual (default: dual when any Service or the node has IPv6).",
      )
      .option(
        "--local-addresses <cidrs>",
        "The node's interface addresses (default: node IPs plus loopback).",
      )
      .option("--nfacct [bool]", "Assume the nfacct counters exist (default true).")
      .option("--random-fully [bool]", "Assume MASQUERADE --random-fully is supported (default true).")
      .option("--skip-invalid", "Skip invalid objects (with a warning) instead of failing.")
      .option("-o, --output <format>", "text (default) or json (docs/drift.md).")
      .exitOverride(),
  ).action(async (options: Record<string, unknown>) => {
    const { diffCommand } = await import("./diff.ts");
    process.stdout.write(await diffCommand(options));
  });

  program
    .command("demo")
    .description(
      "The seed's nginx Service in a network-namespace sandbox, programmed by the real daemon, with real traffic (root).",
    )
    .option("--requests <n>", "Requests per traffic step (default 20).")
    .option(
      "--proxy-mode <mode>",
      "iptables (default) or nftables: the mode the daemon runs and the demo walks.",
    )
    .option(
      "--keep",
      "Leave the sandbox in place at the end (for poking around); the next demo run removes it.",
    )
    .exitOverride()
    .action(async (options: Record<string, unknown>) => {
      const { demoCommand } = await import("./demo.ts");
      await demoCommand(options);
    });

  return program;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram(argv);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode;
    if (error instanceof ConfigError) {
      process.stderr.write(
        `kube-proxy-ts: invalid configuration:\n${error.problems.map((p) => `  - ${p}`).join("\n")}\n`,
      );
      return 1;
    }
    if (error instanceof KubeProxyError) {
      process.stderr.write(`kube-proxy-ts: ${error.message}\n`);
      return 1;
    }
    process.stderr.write(
      `kube-proxy-ts: internal error (this is a bug, please report it):\n${(error as Error).stack ?? String(error)}\n`,
    );
    return 70;
  }
}
