/**
 * Where the API server is and how to authenticate to it: a kubeconfig file (clusters, users,
 * contexts; token, token file, client certificate, exec plugins), a --master override, or the
 * in-cluster service account. Mirrors client-go's BuildConfigFromFlags.
 */
import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, join } from "node:path";
import { yaml } from "../yaml.ts";
import { InputError } from "../errors.ts";
import type { Runner } from "../kernel/exec.ts";

/** PEM material for the TLS connection; buffers so inline data and files look the same. */
export interface TlsMaterial {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly insecureSkipTlsVerify: boolean;
  readonly serverName?: string;
}

/** What a credential source hands out for one request. */
export interface Credentials {
  readonly token?: string;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

/**
 * Supplies credentials per request. `invalidate` is called after a 401 so that rotated tokens
 * (token files, exec plugins) are fetched again instead of waiting for their cache to expire.
 */
export interface CredentialSource {
  get(): Promise<Credentials>;
  invalidate(): void;
}

export interface RestConfig {
  /** Base URL, e.g. https://10.0.0.1:6443 (a path prefix is kept). */
  readonly server: string;
  readonly tls: TlsMaterial;
  readonly credentials: CredentialSource;
  /** Where this configuration came from, for log lines and errors. */
  readonly origin: string;
}

export interface Clock {
  now(): number;
}

const systemClock: Clock = { now: () => Date.now() };

const NO_CREDENTIALS: CredentialSource = { get: async () => ({}), invalidate: () => undefined };

function staticCredentials(creds: Credentials): CredentialSource {
  return { get: async () => creds, invalidate: () => undefined };
}

/**
 * A token read from a file and re-read at most once a minute (client-go's cachingTokenSource
 * period), or right after a 401, so that projected service-account tokens rotate in place.
 */
export function tokenFileSource(
  path: string,
  clock: Clock = systemClock,
  periodMs = 60_000,
): CredentialSource {
  let cached: { token: string; at: number } | undefined;
  return {
    async get() {
      if (cached === undefined || clock.now() - cached.at >= periodMs) {
        let text: string;
        try {
          text = await readFile(path, "utf8");
        } catch (cause) {
          throw new InputError(path, `cannot read token file: ${(cause as Error).message}`, { cause });
        }
        cached = { token: text.trim(), at: clock.now() };
      }
      return { token: cached.token };
    },
    invalidate() {
      cached = undefined;
    },
  };
}

// ---- kubeconfig parsing ---------------------------------------------------------------------

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

class KubeconfigReader {
  constructor(
    readonly path: string,
    readonly dir: string,
  ) {}

  fail(field: string, message: string, cause?: unknown): never {
    throw new InputError(this.path, `${field}: ${message}`, cause === undefined ? undefined : { cause });
  }

  string(obj: Obj, field: string, where: string): string | undefined {
    const v = obj[field];
    if (v === undefined || v === null || v === "") return undefined;
    if (typeof v !== "string") this.fail(`${where}.${field}`, `must be a string, got ${typeof v}`);
    return v;
  }

  bool(obj: Obj, field: string, where: string): boolean {
    const v = obj[field];
    if (v === undefined || v === null) return false;
    if (typeof v !== "boolean") this.fail(`${where}.${field}`, `must be true or false`);
    return v;
  }

  /** `name`-keyed list entries (clusters, users, contexts) → the nested object under `inner`. */
  named(root: Obj, list: string, inner: string, name: string): Obj {
    const entries = root[list];
    if (entries !== undefined && entries !== null && !Array.isArray(entries))
      this.fail(list, "must be a list");
    const entry = (Array.isArray(entries) ? entries : []).find((e) => isObj(e) && e["name"] === name);
    if (!isObj(entry)) this.fail(list, `no entry named ${JSON.stringify(name)}`);
    const value = entry[inner];
    if (!isObj(value)) this.fail(`${list}[${JSON.stringify(name)}].${inner}`, "missing or not a mapping");
    return value;
  }

  resolve(file: string): string {
    return isAbsolute(file) ? file : join(this.dir, file);
  }

  /** `<field>-data` (base64, inline) wins over `<field>` (a path relative to the kubeconfig). */
  async pem(obj: Obj, field: string, where: string): Promise<Buffer | undefined> {
    const data = this.string(obj, `${field}-data`, where);
    if (data !== undefined) {
      const compact = data.replace(/\s+/g, "");
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) this.fail(`${where}.${field}-data`, "is not valid base64");
      const decoded = Buffer.from(compact, "base64");
      if (!decoded.toString("utf8").includes("-----BEGIN")) {
        this.fail(`${where}.${field}-data`, "does not decode to PEM data");
      }
      return decoded;
    }
    const file = this.string(obj, field, where);
    if (file === undefined) return undefined;
    try {
      return await readFile(this.resolve(file));
    } catch (cause) {
      return this.fail(
        `${where}.${field}`,
        `cannot read ${this.resolve(file)}: ${(cause as Error).message}`,
        cause,
      );
    }
  }
}

export interface KubeconfigOptions {
  /** Overrides the cluster's server URL (kube-proxy's --master). */
  readonly master?: string;
  /** Use this context instead of current-context. */
  readonly context?: string;
  /** Runs exec credential plugins. */
  readonly runner?: Runner;
  readonly clock?: Clock;
}

/** Loads a kubeconfig file; every problem names the file and the offending field. */
export async function loadKubeconfig(path: string, options: KubeconfigOptions = {}): Promise<RestConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (cause) {
    throw new InputError(path, `cannot read kubeconfig: ${(cause as Error).message}`, { cause });
  }
  let root: unknown;
  try {
    root = yaml().parse(text);
  } catch (cause) {
    throw new InputError(path, `not valid YAML: ${(cause as Error).message}`, { cause });
  }
  if (!isObj(root)) throw new InputError(path, "a kubeconfig must be a YAML mapping");
  return parseKubeconfig(root, new KubeconfigReader(path, dirname(path)), options);
}

async function parseKubeconfig(
  root: Obj,
  r: KubeconfigReader,
  options: KubeconfigOptions,
): Promise<RestConfig> {
  const contextName = options.context ?? r.string(root, "current-context", "(root)");
  if (contextName === undefined) r.fail("current-context", "is not set and no context was given");
  const context = r.named(root, "contexts", "context", contextName);
  const where = `contexts[${JSON.stringify(contextName)}].context`;
  const clusterName = r.string(context, "cluster", where);
  if (clusterName === undefined) r.fail(`${where}.cluster`, "is not set");
  const cluster = r.named(root, "clusters", "cluster", clusterName);
  const cw = `clusters[${JSON.stringify(clusterName)}].cluster`;
  const rawServer = options.master ?? r.string(cluster, "server", cw);
  if (rawServer === undefined) r.fail(`${cw}.server`, "is not set");
  const ca = await r.pem(cluster, "certificate-authority", cw);
  const tlsServerName = r.string(cluster, "tls-server-name", cw);
  const insecure = r.bool(cluster, "insecure-skip-tls-verify", cw);

  const userName = r.string(context, "user", where);
  const user = userName === undefined ? {} : r.named(root, "users", "user", userName);
  const uw = `users[${JSON.stringify(userName ?? "")}].user`;
  const cert = await r.pem(user, "client-certificate", uw);
  const key = await r.pem(user, "client-key", uw);
  if ((cert === undefined) !== (key === undefined)) {
    r.fail(uw, "client-certificate and client-key must be given together");
  }
  const server = serverURL(rawServer, ca !== undefined || cert !== undefined || insecure);
  if (server === null)
    r.fail(
      options.master !== undefined ? "--master" : `${cw}.server`,
      `${JSON.stringify(rawServer)} ${BAD_SERVER}`,
    );
  const token = r.string(user, "token", uw);
  const tokenFile = r.string(user, "tokenFile", uw);
  let credentials: CredentialSource = NO_CREDENTIALS;
  if (token !== undefined) credentials = staticCredentials({ token });
  else if (tokenFile !== undefined) credentials = tokenFileSource(r.resolve(tokenFile), options.clock);
  else if (user["exec"] !== undefined) {
    if (!isObj(user["exec"])) r.fail(`${uw}.exec`, "must be a mapping");
    credentials = execCredentialSource(r, user["exec"], `${uw}.exec`, { server, ca, insecure }, options);
  }
  for (const unsupported of ["auth-provider", "username", "password"]) {
    if (user[unsupported] !== undefined)
      r.fail(`${uw}.${unsupported}`, "is not supported (use a token, client certificate or exec plugin)");
  }
  return {
    server,
    tls: {
      ...(ca ? { ca } : {}),
      ...(cert ? { cert } : {}),
      ...(key ? { key } : {}),
      ...(tlsServerName ? { serverName: tlsServerName } : {}),
      insecureSkipTlsVerify: insecure,
    },
    credentials,
    origin: r.path,
  };
}

/**
 * client-go's DefaultServerURL: a URL is kept as it is; a host[:port] gets `https://` when the
 * configuration has TLS material (a CA, a client certificate, insecure-skip-tls-verify) and
 * `http://` otherwise. null when neither gives an http(s) URL with a host.
 */
export function serverURL(host: string, defaultTLS: boolean): string | null {
  const parse = (text: string): URL | null => {
    try {
      return new URL(text);
    } catch {
      return null;
    }
  };
  const usable = (url: URL | null): boolean =>
    url !== null && url.host !== "" && (url.protocol === "https:" || url.protocol === "http:");
  const asURL = parse(host);
  if (asURL !== null && asURL.host !== "") return usable(asURL) ? host : null;
  // Something that names a scheme and still does not parse is a bad URL, not a host.
  if (host.includes("://")) return null;
  const prefixed = `${defaultTLS ? "https" : "http"}://${host}`;
  return usable(parse(prefixed)) ? prefixed : null;
}

const BAD_SERVER = "is not an http(s) URL or a host:port pair";

// ---- exec credential plugins ------------------------------------------------------------------

const EXEC_API_VERSIONS = ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"];

function execCredentialSource(
  r: KubeconfigReader,
  exec: Obj,
  where: string,
  cluster: { server: string; ca: Buffer | undefined; insecure: boolean },
  options: KubeconfigOptions,
): CredentialSource {
  const command = r.string(exec, "command", where);
  if (command === undefined) r.fail(`${where}.command`, "is not set");
  const apiVersion = r.string(exec, "apiVersion", where);
  if (apiVersion === undefined || !EXEC_API_VERSIONS.includes(apiVersion)) {
    r.fail(`${where}.apiVersion`, `must be one of ${EXEC_API_VERSIONS.join(", ")}`);
  }
  const args = exec["args"] ?? [];
  if (!Array.isArray(args) || !args.every((a) => typeof a === "string"))
    r.fail(`${where}.args`, "must be a list of strings");
  const envList = exec["env"] ?? [];
  if (!Array.isArray(envList)) r.fail(`${where}.env`, "must be a list of {name, value}");
  const env: Record<string, string> = {};
  envList.forEach((e: unknown, i) => {
    if (!isObj(e) || typeof e["name"] !== "string" || typeof e["value"] !== "string") {
      r.fail(`${where}.env[${i}]`, "must have string name and value");
    }
    env[e["name"]] = e["value"];
  });
  const runner = options.runner;
  if (runner === undefined) r.fail(where, "exec plugins need a process runner");
  const clock = options.clock ?? systemClock;
  // Relative commands with a path separator are relative to the kubeconfig, like client-go.
  const program = command.includes("/") ? r.resolve(command) : command;
  const provideClusterInfo = r.bool(exec, "provideClusterInfo", where);
  const info = {
    apiVersion,
    kind: "ExecCredential",
    spec: {
      interactive: false,
      ...(provideClusterInfo
        ? {
            cluster: {
              server: cluster.server,
              "insecure-skip-tls-verify": cluster.insecure,
              ...(cluster.ca ? { "certificate-authority-data": cluster.ca.toString("base64") } : {}),
            },
          }
        : {}),
    },
  };
  let cached: { creds: Credentials; expiresAt: number } | undefined;
  return {
    async get() {
      if (cached !== undefined && clock.now() < cached.expiresAt) return cached.creds;
      // The cluster info (with its CA) travels in the environment, as client-go does, never in
      // argv where any user of the node could read it; the kubeconfig's env entries win over ours.
      let stdout: string;
      try {
        stdout = (
          await runner.run([program, ...(args as string[])], {
            timeoutMs: 30_000,
            env: { KUBERNETES_EXEC_INFO: JSON.stringify(info), ...env },
          })
        ).stdout;
      } catch (cause) {
        throw new InputError(
          r.path,
          `${where}: credential plugin ${program} failed: ${(cause as Error).message}`,
          { cause },
        );
      }
      let out: unknown;
      try {
        out = JSON.parse(stdout);
      } catch (cause) {
        throw new InputError(r.path, `${where}: credential plugin ${program} did not print JSON`, { cause });
      }
      const status = isObj(out) ? out["status"] : undefined;
      if (!isObj(out) || out["kind"] !== "ExecCredential" || !isObj(status)) {
        throw new InputError(
          r.path,
          `${where}: credential plugin ${program} did not print an ExecCredential with status`,
        );
      }
      const token = typeof status["token"] === "string" ? status["token"] : undefined;
      const certData =
        typeof status["clientCertificateData"] === "string" ? status["clientCertificateData"] : undefined;
      const keyData = typeof status["clientKeyData"] === "string" ? status["clientKeyData"] : undefined;
      if (token === undefined && (certData === undefined || keyData === undefined)) {
        throw new InputError(
          r.path,
          `${where}: credential plugin ${program} returned neither token nor client certificate`,
        );
      }
      const expiry =
        typeof status["expirationTimestamp"] === "string" ? Date.parse(status["expirationTimestamp"]) : NaN;
      const creds: Credentials = {
        ...(token !== undefined ? { token } : {}),
        ...(certData !== undefined && keyData !== undefined
          ? { cert: Buffer.from(certData), key: Buffer.from(keyData) }
          : {}),
      };
      cached = { creds, expiresAt: Number.isNaN(expiry) ? Number.POSITIVE_INFINITY : expiry };
      return creds;
    },
    invalidate() {
      cached = undefined;
    },
  };
}

// ---- in-cluster and flag handling -------------------------------------------------------------

export interface InClusterOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** Directory holding token, ca.crt (default: the standard service-account mount). */
  readonly serviceAccountDir?: string;
  readonly clock?: Clock;
}

const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** client-go's InClusterConfig: KUBERNETES_SERVICE_HOST/PORT plus the mounted service account. */
export async function inClusterConfig(options: InClusterOptions = {}): Promise<RestConfig> {
  const env = options.env ?? process.env;
  const host = env["KUBERNETES_SERVICE_HOST"];
  const port = env["KUBERNETES_SERVICE_PORT"];
  if (!host || !port) {
    throw new InputError(
      "in-cluster config",
      "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined (or pass --kubeconfig / --master)",
    );
  }
  const dir = options.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const credentials = tokenFileSource(join(dir, "token"), options.clock);
  await credentials.get();
  let ca: Buffer;
  try {
    ca = await readFile(join(dir, "ca.crt"));
  } catch (cause) {
    throw new InputError(join(dir, "ca.crt"), `cannot read service account CA: ${(cause as Error).message}`, {
      cause,
    });
  }
  const hostPart = host.includes(":") ? `[${host}]` : host;
  return {
    server: `https://${hostPart}:${port}`,
    tls: { ca, insecureSkipTlsVerify: false },
    credentials,
    origin: "in-cluster service account",
  };
}

export interface ConnectionFlags {
  readonly kubeconfig?: string;
  readonly master?: string;
}

/**
 * kube-proxy's rules: --kubeconfig (with --master overriding the server) if given; else --master
 * alone (no credentials); else the in-cluster service account.
 */
export async function buildRestConfig(
  flags: ConnectionFlags,
  deps: { runner?: Runner; clock?: Clock; inCluster?: InClusterOptions } = {},
): Promise<RestConfig> {
  const master = flags.master === "" ? undefined : flags.master;
  if (flags.kubeconfig !== undefined && flags.kubeconfig !== "") {
    return loadKubeconfig(flags.kubeconfig, {
      ...(master !== undefined ? { master } : {}),
      ...(deps.runner ? { runner: deps.runner } : {}),
      ...(deps.clock ? { clock: deps.clock } : {}),
    });
  }
  if (master !== undefined) {
    const server = serverURL(master, false);
    if (server === null) throw new InputError("--master", `${JSON.stringify(master)} ${BAD_SERVER}`);
    return {
      server,
      tls: { insecureSkipTlsVerify: false },
      credentials: NO_CREDENTIALS,
      origin: "--master",
    };
  }
  return inClusterConfig(deps.inCluster);
}
