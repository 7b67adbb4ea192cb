/**
 * One base class for every error the project throws on purpose. Callers match on `code`
 * (stable, never reused), not on the class or the message.
 */
export abstract class KubeProxyError extends Error {
  abstract readonly code: string;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A Kubernetes object (or a manifests file) that cannot be used; names the object and field. */
export class InvalidObjectError extends KubeProxyError {
  readonly code = "KPT_INVALID_OBJECT";

  constructor(
    readonly object: string,
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${object}: ${field}: ${reason}`);
  }
}

/** A configuration value (flag or KubeProxyConfiguration field) that is not acceptable. */
export class ConfigError extends KubeProxyError {
  readonly code = "KPT_CONFIG";

  constructor(
    readonly problems: readonly string[],
    options?: { cause?: unknown },
  ) {
    super(problems.join("; "), options);
  }
}

/** Input that could not be read or parsed (a file, a dump, a kubeconfig). */
export class InputError extends KubeProxyError {
  readonly code = "KPT_INPUT";

  constructor(
    readonly source: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${source}: ${message}`, options);
  }
}
