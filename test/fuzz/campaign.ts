/**
 * The fuzz campaign: adversarial objects and texts (./arbitraries.ts) through the decoders, the
 * manifests parser, the model (buildProxyState and the incremental ProxyStateStore) and the
 * renderers of both modes. It counts crashes (a throw that is not a KubeProxyError), hangs (one
 * call over `hangMs`), injections (./checks.ts), refusals whose message does not name the object
 * and the field, model inconsistencies, and places where the YAML subset parser disagrees with
 * the full one. Pure: no kernel (see ./kernel.ts for the sampled kernel checks).
 */
import { isDeepStrictEqual } from "node:util";
import fc from "fast-check";
import { renderIptables } from "../../src/backends/iptables/render.ts";
import { upstreamTestSettings as iptSettings } from "../../src/backends/iptables/settings.ts";
import type { IptablesSettings } from "../../src/backends/iptables/types.ts";
import { renderNftables } from "../../src/backends/nftables/render.ts";
import { upstreamTestSettings as nftSettings } from "../../src/backends/nftables/settings.ts";
import { planFullSync } from "../../src/backends/nftables/transactions.ts";
import type { NftablesSettings } from "../../src/backends/nftables/types.ts";
import { InvalidObjectError, KubeProxyError } from "../../src/errors.ts";
import { decodeEndpointSlice, decodeNode, decodeService, namespacedName } from "../../src/k8s/objects.ts";
import type { EndpointSlice, Node, Service } from "../../src/k8s/objects.ts";
import { ProxyStateStore } from "../../src/proxy/changetracker.ts";
import { buildProxyState } from "../../src/proxy/state.ts";
import type { IPFamily } from "../../src/ip.ts";
import type { ProxyState } from "../../src/proxy/types.ts";
import { parseManifests } from "../../src/source/manifests.ts";
import { parseYamlSubset } from "../../src/source/yaml-subset.ts";
import { yaml } from "../../src/yaml.ts";
import {
  aliasBomb,
  editText,
  endpointSliceArb,
  linkSlice,
  mutate,
  mutationsArb,
  nodeArb,
  RECURSIVE_ALIAS_TEXTS,
  serviceArb,
  textEditsArb,
  yamlishTextArb,
} from "./arbitraries.ts";
import { dangerousStrings, iptablesLineProblems, leakedStrings, nftLineProblems } from "./checks.ts";

export type Category = "crash" | "hang" | "injection" | "unnamedError" | "modelMismatch" | "subsetMismatch";

export interface Finding {
  readonly category: Category;
  readonly stage: string;
  readonly detail: string;
  /** The input, cut to 1,500 characters for printing. */
  readonly input: string;
  /** The whole input (for the `--json` report), so that a finding can be replayed. */
  readonly wholeInput: string;
}

export interface KernelSample {
  readonly mode: "iptables" | "nftables";
  readonly family: IPFamily;
  readonly payload: string;
  readonly score: number;
}

export interface CampaignReport {
  readonly seed: number;
  readonly cases: number;
  /** Raw objects decoded plus manifests texts parsed. */
  readonly objects: number;
  readonly texts: number;
  readonly decodedObjects: number;
  readonly refusedObjects: number;
  readonly manifestProblems: number;
  readonly iptablesRenders: number;
  readonly nftablesRenders: number;
  /** Renderer refusals (KPT_RENDER_INPUT): the decoders let through something the renderer stops. */
  readonly renderRefusals: number;
  readonly renderedLines: number;
  /** Renders with at least one DNAT to an endpoint (how often the endpoint paths ran). */
  readonly rendersWithEndpoints: number;
  readonly counts: Readonly<Record<Category, number>>;
  /** The first findings of each category. */
  readonly findings: readonly Finding[];
  readonly slowestCallMs: number;
  readonly durationMs: number;
  readonly kernelSamples: readonly KernelSample[];
}

export interface CampaignOptions {
  readonly runs: number;
  readonly seed?: number;
  /** A single call slower than this is a hang (ms). */
  readonly hangMs?: number;
  /** Payloads to keep for the kernel check. */
  readonly kernelSamples?: number;
  /** Findings kept per category. */
  readonly keepPerCategory?: number;
  readonly onProgress?: (done: number, report: () => CampaignReport) => void;
}

const caseArb = fc.record({
  services: fc.array(fc.tuple(serviceArb, mutationsArb, mutationsArb), { maxLength: 3 }),
  slices: fc.array(fc.tuple(endpointSliceArb, mutationsArb, mutationsArb, fc.option(fc.nat(), { freq: 4 })), {
    maxLength: 3,
  }),
  node: fc.option(fc.tuple(nodeArb, mutationsArb), { nil: undefined }),
  text: fc.oneof(
    { weight: 3, arbitrary: fc.constant({ kind: "yaml" as const }) },
    { weight: 2, arbitrary: fc.constant({ kind: "json" as const }) },
    { weight: 3, arbitrary: textEditsArb.map((edits) => ({ kind: "edited" as const, edits })) },
    { weight: 3, arbitrary: yamlishTextArb.map((text) => ({ kind: "random" as const, text })) },
    {
      weight: 1,
      arbitrary: fc.integer({ min: 2, max: 9 }).map((levels) => ({ kind: "bomb" as const, levels })),
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom(...RECURSIVE_ALIAS_TEXTS).map((text) => ({ kind: "random" as const, text })),
    },
  ),
  settings: fc.nat({ max: 3 }),
});

type Case = typeof caseArb extends fc.Arbitrary<infer T> ? T : never;

const IPT_VARIANTS: readonly ((f: IPFamily) => IptablesSettings)[] = [
  (f) => iptSettings(f),
  (f) => ({
    ...iptSettings(f),
    masqueradeAll: true,
    localDetector: { mode: "None" },
    largeClusterEndpointsThreshold: 2,
  }),
  (f) => ({
    ...iptSettings(f),
    nodePortAddresses: ["192.168.0.0/16", "2001:db8::/32"],
    localDetector: { mode: "InterfaceNamePrefix", prefix: "veth" },
    nfacct: { ctStateInvalidDroppedPkts: false, localhostNodePortsAcceptedPkts: false },
  }),
  (f) => ({
    ...iptSettings(f),
    localDetector: { mode: "BridgeInterface", interfaceName: "cbr0" },
    conntrackTCPLiberal: true,
  }),
];

const NFT_VARIANTS: readonly ((f: IPFamily) => NftablesSettings)[] = [
  (f) => nftSettings(f),
  (f) => ({ ...nftSettings(f), masqueradeAll: true, localDetector: { mode: "None" }, nodePortAddresses: [] }),
  (f) => ({
    ...nftSettings(f),
    localDetector: { mode: "InterfaceNamePrefix", prefix: "veth" },
    serviceCIDRs: [],
  }),
  (f) => ({ ...nftSettings(f), localDetector: { mode: "BridgeInterface", interfaceName: "cbr0" } }),
];

function whole(v: unknown): string {
  try {
    return typeof v === "string" ? v : (JSON.stringify(v) ?? String(v));
  } catch {
    return String(v);
  }
}

function short(v: unknown): string {
  const s = whole(v);
  return s.length > 1500 ? `${s.slice(0, 1500)}… (${s.length} chars)` : s;
}

/** Deep equality; true when the values are too deep to compare (the harness's own stack). */
function sameValue(a: unknown, b: unknown): boolean {
  try {
    return isDeepStrictEqual(a, b);
  } catch (err) {
    if (err instanceof RangeError) return true;
    throw err;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const DNS = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function runCampaign(options: CampaignOptions): CampaignReport {
  const seed = options.seed ?? Date.now() % 2 ** 31;
  const hangMs = options.hangMs ?? 2000;
  const keep = options.keepPerCategory ?? 5;
  const wantSamples = options.kernelSamples ?? 0;
  const started = performance.now();
  const counts: Record<Category, number> = {
    crash: 0,
    hang: 0,
    injection: 0,
    unnamedError: 0,
    modelMismatch: 0,
    subsetMismatch: 0,
  };
  const findings: Finding[] = [];
  let objects = 0;
  let texts = 0;
  let decodedObjects = 0;
  let refusedObjects = 0;
  let manifestProblems = 0;
  let iptablesRenders = 0;
  let nftablesRenders = 0;
  let renderRefusals = 0;
  let renderedLines = 0;
  let rendersWithEndpoints = 0;
  let slowest = 0;
  let cases = 0;
  const random: KernelSample[] = [];
  const hardest: KernelSample[] = [];
  let sampleRng = seed;
  const nextRandom = (): number => {
    sampleRng = (Math.imul(sampleRng, 1103515245) + 12345) >>> 0;
    return sampleRng / 2 ** 32;
  };

  const find = (category: Category, stage: string, detail: string, input: unknown): void => {
    counts[category]++;
    if (findings.filter((f) => f.category === category).length < keep)
      findings.push({
        category,
        stage,
        detail: detail.slice(0, 2000),
        input: short(input),
        wholeInput: whole(input),
      });
  };

  /** Runs `fn`; a KubeProxyError is a refusal (returned), any other throw a crash. */
  function guard<T>(
    stage: string,
    input: unknown,
    fn: () => T,
  ): { ok: T } | { refused: KubeProxyError } | null {
    const t0 = performance.now();
    try {
      return { ok: fn() };
    } catch (err) {
      if (err instanceof KubeProxyError) return { refused: err };
      find(
        "crash",
        stage,
        err instanceof Error ? `${err.name}: ${err.message}\n${err.stack ?? ""}` : String(err),
        input,
      );
      return null;
    } finally {
      const ms = performance.now() - t0;
      if (ms > slowest) slowest = ms;
      if (ms > hangMs) find("hang", stage, `${Math.round(ms)} ms`, input);
    }
  }

  const checkNamed = (kind: string, raw: unknown, err: KubeProxyError, stage: string): void => {
    const problems: string[] = [];
    if (!(err instanceof InvalidObjectError))
      problems.push(`${err.constructor.name} is not an InvalidObjectError`);
    else {
      if (!err.object.startsWith(kind))
        problems.push(`object ${JSON.stringify(err.object)} does not name the kind`);
      const meta = isRecord(raw) && isRecord(raw["metadata"]) ? raw["metadata"] : null;
      const name = meta?.["name"];
      if (typeof name === "string" && name.length <= 253 && DNS.test(name) && !err.object.includes(name))
        problems.push(`object ${JSON.stringify(err.object)} does not name ${name}`);
      if (err.field === "" || (err.field === "(object)" && isRecord(raw) && !err.reason.includes("bytes")))
        problems.push(`field ${JSON.stringify(err.field)} is not a field`);
      if (!err.message.includes(err.field) || !err.message.includes(err.object))
        problems.push("message omits object or field");
    }
    if (problems.length > 0) find("unnamedError", stage, `${problems.join("; ")}: ${err.message}`, raw);
  };

  const checkProblemNamed = (p: InvalidObjectError, stage: string, input: unknown): void => {
    const okObject = p.object.includes("fuzz.yaml") || /^(Service|EndpointSlice|Node) /.test(p.object);
    if (!okObject || p.field === "")
      find(
        "unnamedError",
        stage,
        `object ${JSON.stringify(p.object)} field ${JSON.stringify(p.field)}: ${p.message}`,
        input,
      );
  };

  const sample = (s: KernelSample): void => {
    if (wantSamples === 0) return;
    const half = Math.ceil(wantSamples / 2);
    // Reservoir of random payloads, plus the ones with the most adversarial content.
    if (random.length < half) random.push(s);
    else if (nextRandom() < half / (iptablesRenders + nftablesRenders + 1))
      random[Math.floor(nextRandom() * half)] = s;
    hardest.push(s);
    hardest.sort((a, b) => b.score - a.score);
    if (hardest.length > wantSamples - half) hardest.pop();
  };

  function renderAll(
    state: ProxyState,
    settingsIndex: number,
    inputs: readonly string[],
    input: unknown,
    stage: string,
  ): void {
    const family = state.family;
    const ipt = IPT_VARIANTS[settingsIndex % IPT_VARIANTS.length]!(family);
    const r = guard(
      `${stage}:renderIptables`,
      input,
      () =>
        renderIptables({
          state,
          settings: ipt,
          fullSync: true,
          changedServices: new Set(),
          existingNatChains: [],
        }).payload,
    );
    if (r !== null && "refused" in r) renderRefusals++;
    if (r !== null && "ok" in r) {
      iptablesRenders++;
      if (r.ok.includes("-j DNAT")) rendersWithEndpoints++;
      const lines = r.ok.split("\n").filter((l) => l !== "");
      renderedLines += lines.length;
      let score = 0;
      for (const line of lines) {
        const problems = iptablesLineProblems(line);
        if (problems.length > 0) find("injection", `${stage}:iptables`, problems[0]!, input);
        score = Math.max(score, line.length);
      }
      for (const s of leakedStrings(r.ok, inputs))
        find("injection", `${stage}:iptables`, `input ${JSON.stringify(s)} outside comments`, input);
      if (state.services.size > 0) sample({ mode: "iptables", family, payload: r.ok, score });
    }
    const nft = NFT_VARIANTS[settingsIndex % NFT_VARIANTS.length]!(family);
    const n = guard(
      `${stage}:renderNftables`,
      input,
      () => planFullSync(renderNftables({ state, settings: nft }), null, { resetBaseChains: true }).payload,
    );
    if (n !== null && "refused" in n) renderRefusals++;
    if (n !== null && "ok" in n) {
      nftablesRenders++;
      if (n.ok.includes(" dnat to ")) rendersWithEndpoints++;
      const lines = n.ok.split("\n").filter((l) => l !== "");
      renderedLines += lines.length;
      let score = 0;
      for (const line of lines) {
        const problems = nftLineProblems(line);
        if (problems.length > 0) find("injection", `${stage}:nftables`, problems[0]!, input);
        score = Math.max(score, line.length);
      }
      for (const s of leakedStrings(n.ok, inputs))
        find("injection", `${stage}:nftables`, `input ${JSON.stringify(s)} outside comments`, input);
      if (state.services.size > 0) sample({ mode: "nftables", family, payload: n.ok, score });
    }
  }

  const decoders = {
    Service: decodeService,
    EndpointSlice: decodeEndpointSlice,
    Node: decodeNode,
  } as const;

  function decode<K extends keyof typeof decoders>(
    kind: K,
    raw: unknown,
  ): ReturnType<(typeof decoders)[K]> | null {
    objects++;
    const r = guard(
      `decode${kind}`,
      raw,
      () => decoders[kind](raw, "fuzz") as ReturnType<(typeof decoders)[K]>,
    );
    if (r === null) return null;
    if ("refused" in r) {
      refusedObjects++;
      checkNamed(kind, raw, r.refused, `decode${kind}`);
      return null;
    }
    decodedObjects++;
    return r.ok;
  }

  /** Store events add → update → delete must leave it empty, and its adds must match buildProxyState. */
  function checkStore(
    family: IPFamily,
    pairs: {
      svc: [Service, Service | null][];
      slices: [EndpointSlice, EndpointSlice | null][];
      node: Node | null;
    },
    input: unknown,
  ): void {
    guard("ProxyStateStore", input, () => {
      const store = new ProxyStateStore({ family, nodeName: "test-node", clock: () => 0 });
      store.nodeUpdate(pairs.node);
      for (const [a] of pairs.svc) store.serviceChanges.update(null, a);
      for (const [a] of pairs.slices) store.endpointsChanges.endpointSliceUpdate(a, false);
      const first = store.applyPending();
      const whole = buildProxyState(
        {
          services: pairs.svc.map(([a]) => a),
          endpointSlices: pairs.slices.map(([a]) => a),
          node: pairs.node,
        },
        { family, nodeName: "test-node" },
      );
      if (
        !isDeepStrictEqual(
          [...first.state.services.keys()].sort(),
          [...whole.state.services.keys()].sort(),
        ) ||
        !isDeepStrictEqual(
          [...first.state.endpoints].map(([k, v]) => [k, v.map((e) => e.endpoint)]).sort(),
          [...whole.state.endpoints].map(([k, v]) => [k, v.map((e) => e.endpoint)]).sort(),
        )
      )
        find("modelMismatch", "ProxyStateStore vs buildProxyState", "different services or endpoints", input);
      for (const [a, b] of pairs.svc) if (b !== null) store.serviceChanges.update(a, b);
      for (const [, b] of pairs.slices) if (b !== null) store.endpointsChanges.endpointSliceUpdate(b, false);
      store.applyPending();
      for (const [a, b] of pairs.svc) store.serviceChanges.update(b ?? a, null);
      for (const [a, b] of pairs.slices) store.endpointsChanges.endpointSliceUpdate(b ?? a, true);
      const last = store.applyPending();
      if (last.state.services.size !== 0 || last.state.endpoints.size !== 0)
        find(
          "modelMismatch",
          "ProxyStateStore",
          `after deleting everything: ${last.state.services.size} services, ${last.state.endpoints.size} endpoint lists left`,
          input,
        );
    });
  }

  function runCase(c: Case): void {
    cases++;
    const rawServices = c.services.map(
      ([base, m1, m2]) => [mutate(base, m1), m2.length === 0 ? null : mutate(base, m2)] as const,
    );
    const rawSlices = c.slices.map(([unlinked, m1, m2, link]) => {
      const owner =
        link === null || c.services.length === 0 ? null : c.services[link % c.services.length]![0];
      const base = owner === null ? unlinked : linkSlice(unlinked, owner);
      return [mutate(base, m1), m2.length === 0 ? null : mutate(base, m2)] as const;
    });
    const rawNode = c.node === undefined ? null : mutate(c.node[0], c.node[1]);
    const allRaw = [...rawServices.flat(), ...rawSlices.flat(), rawNode].filter((x) => x !== null);
    const inputs = dangerousStrings(allRaw);
    const input = { services: rawServices, slices: rawSlices, node: rawNode };

    const services: Service[] = [];
    const svcPairs: [Service, Service | null][] = [];
    const seenSvc = new Set<string>();
    for (const [a, b] of rawServices) {
      const da = decode("Service", a);
      const db = b === null ? null : decode("Service", b);
      if (da === null) continue;
      services.push(da);
      const nn = namespacedName(da.metadata);
      if (seenSvc.has(nn)) continue;
      seenSvc.add(nn);
      svcPairs.push([da, db !== null && namespacedName(db.metadata) === nn ? db : null]);
    }
    const slices: EndpointSlice[] = [];
    const slicePairs: [EndpointSlice, EndpointSlice | null][] = [];
    const seenSlice = new Set<string>();
    const svcLabel = (s: EndpointSlice): string => s.metadata.labels["kubernetes.io/service-name"] ?? "";
    for (const [a, b] of rawSlices) {
      const da = decode("EndpointSlice", a);
      const db = b === null ? null : decode("EndpointSlice", b);
      if (da === null) continue;
      slices.push(da);
      const nn = namespacedName(da.metadata);
      if (seenSlice.has(nn)) continue;
      seenSlice.add(nn);
      const same =
        db !== null &&
        namespacedName(db.metadata) === nn &&
        svcLabel(db) === svcLabel(da) &&
        db.addressType === da.addressType &&
        JSON.stringify(db.metadata.labels) === JSON.stringify(da.metadata.labels);
      const keepLabels = JSON.stringify(da.metadata.labels);
      slicePairs.push([da, same && JSON.stringify(db.metadata.labels) === keepLabels ? db : null]);
    }
    const node = rawNode === null ? null : decode("Node", rawNode);

    for (const family of ["IPv4", "IPv6"] as const) {
      const built = guard("buildProxyState", input, () =>
        buildProxyState({ services, endpointSlices: slices, node }, { family, nodeName: "test-node" }),
      );
      if (built !== null && "ok" in built) renderAll(built.ok.state, c.settings, inputs, input, "objects");
      checkStore(family, { svc: svcPairs, slices: slicePairs, node }, input);
    }

    // The same objects (and worse) as manifests text.
    texts++;
    objects++;
    let text: string;
    const docs = allRaw;
    try {
      switch (c.text.kind) {
        case "yaml":
          text = docs.map((d) => yaml().stringify(d)).join("---\n");
          break;
        case "json":
          text = JSON.stringify({ apiVersion: "v1", kind: "List", items: docs }, null, 1);
          break;
        case "edited":
          text = editText(docs.map((d) => yaml().stringify(d)).join("---\n"), c.text.edits);
          break;
        case "random":
          text = c.text.text;
          break;
        case "bomb":
          text = aliasBomb(c.text.levels);
          break;
      }
    } catch {
      text = c.text.kind === "random" ? c.text.text : "";
    }
    const parsed = guard("parseManifests", text, () => parseManifests(text, "fuzz.yaml"));
    if (parsed !== null && "ok" in parsed) {
      const m = parsed.ok;
      manifestProblems += m.problems.length;
      for (const p of m.problems) checkProblemNamed(p, "parseManifests", text);
      const textInputs = [
        ...new Set([...inputs, ...dangerousStrings([m.services, m.endpointSlices, m.nodes])]),
      ];
      for (const family of ["IPv4", "IPv6"] as const) {
        const built = guard("buildProxyState(manifests)", text, () =>
          buildProxyState(
            { services: m.services, endpointSlices: m.endpointSlices, node: m.nodes[0] ?? null },
            { family, nodeName: "test-node" },
          ),
        );
        if (built !== null && "ok" in built && built.ok.state.services.size > 0)
          renderAll(built.ok.state, c.settings + 1, textInputs, text, "manifests");
      }
    } else if (parsed !== null && "refused" in parsed) {
      const e = parsed.refused;
      if (!e.message.startsWith("fuzz.yaml"))
        find("unnamedError", "parseManifests", `message does not name the file: ${e.message}`, text);
    }
    // The subset parser promises the full parser's result whenever it returns one.
    const sub = guard("parseYamlSubset", text, () => parseYamlSubset(text));
    if (sub !== null && "ok" in sub && sub.ok !== null && c.text.kind !== "bomb") {
      const full = guard("yaml.parseAllDocuments", text, () => {
        const ds = yaml().parseAllDocuments(text);
        if (!Array.isArray(ds) || ds.some((d) => d.errors.length > 0)) return null;
        return ds.map((d) => d.toJS() as unknown);
      });
      if (full !== null && "ok" in full) {
        const subValues = sub.ok.map((d) => d.value);
        if (full.ok === null)
          find(
            "subsetMismatch",
            "parseYamlSubset",
            "the full parser reports errors the subset parser did not",
            text,
          );
        else if (!sameValue(subValues, full.ok))
          find(
            "subsetMismatch",
            "parseYamlSubset",
            `subset ${short(subValues)} vs yaml ${short(full.ok)}`,
            text,
          );
      }
    }
  }

  const report = (): CampaignReport => ({
    seed,
    cases,
    objects,
    texts,
    decodedObjects,
    refusedObjects,
    manifestProblems,
    iptablesRenders,
    nftablesRenders,
    renderRefusals,
    renderedLines,
    rendersWithEndpoints,
    counts: { ...counts },
    findings: [...findings],
    slowestCallMs: Math.round(slowest),
    durationMs: Math.round(performance.now() - started),
    kernelSamples: [...random, ...hardest],
  });

  // Cases in batches from one seeded stream: the objects of a run are a function of the seed.
  const BATCH = 200;
  let batch = 0;
  while (objects < options.runs) {
    const group = fc.sample(caseArb, { seed: seed + batch, numRuns: BATCH });
    batch++;
    for (const c of group) {
      runCase(c);
      if (objects >= options.runs) break;
    }
    options.onProgress?.(objects, report);
  }
  return report();
}
