import { createRequire } from "node:module";
import type * as Yaml from "yaml";

let loaded: typeof Yaml | undefined;

/**
 * The `yaml` package, loaded on first use. Most runs never need it: block YAML manifests go
 * through the subset parser (source/yaml-subset.ts), and only a config file, a kubeconfig or an
 * unusual manifest needs the full parser. Loading it costs about 70 ms of CPU, a fifth of the
 * daemon's start-up before its first sync.
 */
export function yaml(): typeof Yaml {
  loaded ??= createRequire(import.meta.url)("yaml") as typeof Yaml;
  return loaded;
}
