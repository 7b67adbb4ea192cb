/**
 * From the desired table (./render.ts) to the `nft -f` text of one sync, as upstream's proxier
 * fills its transaction (pure: what the kernel holds comes in as data). A full sync rewrites every
 * chain and every set/map; a partial sync rewrites only the chains of changed Services and
 * changes only the elements that differ from what the last accepted sync left (upstream's
 * `nftElementStorage`). Chains are always rewritten whole (add + flush + rules), never patched.
 */
import {
  BASE_CHAINS,
  isAffinitySetName,
  isServiceChainName,
  KUBE_PROXY_TABLE,
  TABLE_COMMENT,
} from "./names.ts";
import type { NftablesRuleset, NftChain, NftContainer, NftElement, ServicePortObjects } from "./types.ts";

/** What the writer believes our table holds after an accepted sync. */
export interface KernelTable {
  /** Service-port and endpoint chains, in use or stale (flushed, awaiting deletion). */
  readonly chains: ReadonlySet<string>;
  readonly affinitySets: ReadonlySet<string>;
  /** Container → element key → comment and value, for the element diff of partial syncs. */
  readonly elements: ReadonlyMap<string, ReadonlyMap<string, string>>;
  /**
   * What each service port of the last accepted sync wrote (`indexPorts`): a partial sync needs
   * it, and then looks only at the service ports whose objects changed. Absent in a table read
   * from the kernel.
   */
  readonly ports?: CommittedPorts;
}

/**
 * The last accepted sync per service port, by identity of the renderer's (memoized) objects, and
 * how many service ports hold each element key (several ports of one Service share their
 * ClusterIP). A partial sync's plan updates it in place: once planned, only the plan's `after`
 * describes the table (a refused transaction makes the writer forget both).
 */
export interface CommittedPorts {
  readonly byPort: Map<string, ServicePortObjects>;
  /** Container → element key → the number of service ports that have it. */
  readonly owners: Map<string, Map<string, number>>;
  /** Container → element key → signature: the same maps as the table's `elements`. */
  readonly signatures: Map<string, Map<string, string>>;
  /** Chains and affinity sets of `byPort`, in total (tells whether the table holds others). */
  chains: number;
  affinitySets: number;
}

/** Names found in the kernel's table before a full sync; null = unknown (no stale clean-up). */
export interface ExistingObjects {
  readonly chains: readonly string[];
  readonly sets: readonly string[];
}

export interface SyncPlan {
  /** The `nft -f` input: one command per line. */
  readonly payload: string;
  /** The same transaction, typed (what the netlink writer encodes). */
  readonly commands: readonly NftCommand[];
  /** Commands in `payload` (upstream's `NumOperations`). */
  readonly operations: number;
  /** Chains that became unused in this sync: flushed now, deleted later (kernels < 6.2). */
  readonly newlyStaleChains: readonly string[];
  /** Chains in use after this sync. */
  readonly activeChains: ReadonlySet<string>;
  readonly after: KernelTable;
}

export interface FullSyncOptions {
  /**
   * Delete and re-create the base chains (upstream does on its first sync), so that a table
   * left by a version with other priorities gets ours.
   */
  readonly resetBaseChains: boolean;
}

/**
 * One command of a transaction, typed: the `nft -f` writer prints it (`commandText`), the
 * netlink writer encodes it (./netlink/encode.ts). Both send the same transaction.
 */
export type NftCommand =
  | { readonly verb: "add"; readonly what: "table"; readonly comment: string }
  | { readonly verb: "add"; readonly what: "chain"; readonly chain: string; readonly comment?: string }
  | { readonly verb: "flush" | "delete"; readonly what: "chain"; readonly chain: string }
  | { readonly verb: "add"; readonly what: "container"; readonly container: NftContainer }
  | {
      readonly verb: "flush" | "delete";
      readonly what: "container";
      readonly kind: "set" | "map";
      readonly name: string;
    }
  | { readonly verb: "add"; readonly what: "rule"; readonly chain: string; readonly rule: string }
  | { readonly verb: "add"; readonly what: "element"; readonly element: NftElement }
  | { readonly verb: "delete"; readonly what: "element"; readonly container: string; readonly key: string };

const quote = (text: string): string => JSON.stringify(text);

function chainSpec(name: string, comment: string | undefined): string {
  const base = BASE_CHAINS.find((c) => c.name === name);
  if (base !== undefined) return ` { type ${base.type} hook ${base.hook} priority ${base.priority} ; }`;
  return comment === undefined ? "" : ` { comment ${quote(comment)} ; }`;
}

function containerSpec(c: NftContainer): string {
  const parts = [`type ${c.type}`];
  if (c.flags !== undefined && c.flags.length > 0) parts.push(`flags ${c.flags.join(",")}`);
  if (c.timeoutSeconds !== undefined) parts.push(`timeout ${c.timeoutSeconds}s`);
  if (c.comment !== undefined) parts.push(`comment ${quote(c.comment)}`);
  return `{ ${parts.join(" ; ")} ; }`;
}

function elementText(e: NftElement): string {
  const comment = e.comment === undefined ? "" : ` comment ${quote(e.comment)}`;
  const value = e.value === undefined ? "" : ` : ${e.value}`;
  return `${e.container} { ${e.key}${comment}${value} }`;
}

/** The `nft -f` line of one command. */
export function commandText(family: "ip" | "ip6", cmd: NftCommand): string {
  const t = `${family} ${KUBE_PROXY_TABLE}`;
  switch (cmd.what) {
    case "table":
      return `add table ${t} { comment ${quote(cmd.comment)} ; }`;
    case "chain":
      return cmd.verb === "add"
        ? `add chain ${t} ${cmd.chain}${chainSpec(cmd.chain, cmd.comment)}`
        : `${cmd.verb} chain ${t} ${cmd.chain}`;
    case "container":
      return cmd.verb === "add"
        ? `add ${cmd.container.kind} ${t} ${cmd.container.name} ${containerSpec(cmd.container)}`
        : `${cmd.verb} ${cmd.kind} ${t} ${cmd.name}`;
    case "rule":
      return `add rule ${t} ${cmd.chain} ${cmd.rule}`;
    case "element":
      return cmd.verb === "add"
        ? `add element ${t} ${elementText(cmd.element)}`
        : `delete element ${t} ${cmd.container} { ${cmd.key} }`;
  }
}

const chainCommand = (c: NftChain): NftCommand =>
  c.comment === undefined
    ? { verb: "add", what: "chain", chain: c.name }
    : { verb: "add", what: "chain", chain: c.name, comment: c.comment };

class Commands {
  readonly list: NftCommand[] = [];

  addChain(c: NftChain): void {
    this.list.push(chainCommand(c));
  }

  chain(verb: "flush" | "delete", chain: string): void {
    this.list.push({ verb, what: "chain", chain });
  }

  addContainer(container: NftContainer): void {
    this.list.push({ verb: "add", what: "container", container });
  }

  container(verb: "flush" | "delete", kind: "set" | "map", name: string): void {
    this.list.push({ verb, what: "container", kind, name });
  }

  rule(chain: string, rule: string): void {
    this.list.push({ verb: "add", what: "rule", chain, rule });
  }

  addElement(element: NftElement): void {
    this.list.push({ verb: "add", what: "element", element });
  }

  deleteElement(container: string, key: string): void {
    this.list.push({ verb: "delete", what: "element", container, key });
  }
}

/** What an element carries besides its key: a changed one is deleted and added again. */
export const elementSignature = (e: NftElement): string => `${e.comment ?? ""}\u0000${e.value ?? ""}`;
const signature = elementSignature;

/** Signatures of the renderer's (memoized, so mostly unchanged) element objects, built once each. */
const signatureMemo = new WeakMap<NftElement, string>();

function signatureOf(e: NftElement): string {
  let sig = signatureMemo.get(e);
  if (sig === undefined) {
    sig = signature(e);
    signatureMemo.set(e, sig);
  }
  return sig;
}

function signatures(map: ReadonlyMap<string, NftElement>): Map<string, string> {
  const out = new Map<string, string>();
  for (const [key, e] of map) out.set(key, signatureOf(e));
  return out;
}

function elementsByContainer(ruleset: NftablesRuleset): Map<string, Map<string, NftElement>> {
  const out = new Map<string, Map<string, NftElement>>();
  for (const c of ruleset.containers) out.set(c.name, new Map());
  for (const svc of ruleset.services) {
    for (const e of svc.elements) out.get(e.container)!.set(e.key, e);
  }
  return out;
}

/** The table after a full sync; takes `chains` and `affinitySets` as they are (not copied). */
function kernelAfter(
  elements: Map<string, Map<string, NftElement>>,
  chains: ReadonlySet<string>,
  affinitySets: ReadonlySet<string>,
): KernelTable {
  const sigs = new Map<string, ReadonlyMap<string, string>>();
  for (const [name, map] of elements) sigs.set(name, signatures(map));
  return { chains, affinitySets, elements: sigs };
}

/** `active` and `stale` chains: `active` itself when none is stale (110,000 names at 10,000 × 10). */
const withStale = (active: ReadonlySet<string>, stale: readonly string[]): ReadonlySet<string> =>
  stale.length === 0 ? active : new Set([...active, ...stale]);

function serviceChainNames(ruleset: NftablesRuleset): Set<string> {
  const active = new Set<string>();
  for (const svc of ruleset.services) for (const c of svc.chains) active.add(c.name);
  return active;
}

function affinitySetNames(ruleset: NftablesRuleset): Set<string> {
  const active = new Set<string>();
  for (const svc of ruleset.services) for (const s of svc.affinitySets) active.add(s.name);
  return active;
}

function plan(
  cmd: Commands,
  ruleset: NftablesRuleset,
  newlyStaleChains: readonly string[],
  after: KernelTable,
  activeChains: ReadonlySet<string>,
): SyncPlan {
  const commands = cmd.list;
  const text = transaction(ruleset.family, commands);
  return {
    get payload() {
      return text.payload;
    },
    commands,
    operations: commands.length,
    newlyStaleChains,
    activeChains,
    after,
  };
}

/** Every object of the table, written as from scratch; foreign tables are never named. */
export function planFullSync(
  ruleset: NftablesRuleset,
  existing: ExistingObjects | null,
  options: FullSyncOptions,
): SyncPlan {
  const cmd = new Commands();
  cmd.list.push({ verb: "add", what: "table", comment: TABLE_COMMENT });
  if (options.resetBaseChains) {
    for (const c of ruleset.baseChains) {
      cmd.addChain(c);
      cmd.chain("delete", c.name);
    }
  }
  const serviceChains = ruleset.services.flatMap((s) => s.chains);
  const activeChains = serviceChainNames(ruleset);
  const activeSets = affinitySetNames(ruleset);
  for (const c of [...ruleset.baseChains, ...ruleset.fixedChains, ...serviceChains]) {
    cmd.addChain(c);
    cmd.chain("flush", c.name);
  }
  const stale =
    existing === null
      ? []
      : [...new Set(existing.chains)].filter((c) => isServiceChainName(c) && !activeChains.has(c)).sort();
  for (const c of stale) cmd.chain("flush", c);
  for (const c of ruleset.containers) {
    cmd.addContainer(c);
    cmd.container("flush", c.kind, c.name);
  }
  // add + delete: a plain delete fails when the set is not there.
  const np = ruleset.nodePortIPsSet;
  cmd.addContainer(np);
  cmd.container(ruleset.nodePortIPs === null ? "delete" : "flush", "set", np.name);
  for (const svc of ruleset.services) for (const s of svc.affinitySets) cmd.addContainer(s);
  const staleSets =
    existing === null
      ? []
      : [...new Set(existing.sets)].filter((s) => isAffinitySetName(s) && !activeSets.has(s)).sort();
  for (const s of staleSets) cmd.container("delete", "set", s);
  for (const c of [...ruleset.baseChains, ...ruleset.fixedChains, ...serviceChains])
    for (const r of c.rules) cmd.rule(c.name, r);
  for (const ip of ruleset.nodePortIPs ?? []) cmd.addElement({ container: np.name, key: ip });
  const elements = elementsByContainer(ruleset);
  for (const map of elements.values()) for (const e of map.values()) cmd.addElement(e);
  return plan(
    cmd,
    ruleset,
    stale,
    kernelAfter(elements, withStale(activeChains, stale), activeSets),
    activeChains,
  );
}

/**
 * `after` (a full sync's plan of `ruleset`) with the index of its service ports, so that the
 * partial syncs after it are planned from what changed only. Copies the element signatures once.
 */
export function indexPorts(after: KernelTable, ruleset: NftablesRuleset): KernelTable {
  const byPort = new Map<string, ServicePortObjects>();
  const owners = new Map<string, Map<string, number>>();
  const sigs = new Map<string, Map<string, string>>();
  for (const [name, map] of after.elements) {
    sigs.set(name, new Map(map));
    owners.set(name, new Map());
  }
  const index: CommittedPorts = { byPort, owners, signatures: sigs, chains: 0, affinitySets: 0 };
  for (const svc of ruleset.services) {
    byPort.set(svc.port, svc);
    countPort(index, svc, 1);
  }
  return { ...after, elements: sigs, ports: index };
}

function countPort(index: CommittedPorts, svc: ServicePortObjects, delta: 1 | -1): void {
  index.chains += delta * svc.chains.length;
  index.affinitySets += delta * svc.affinitySets.length;
  for (const e of svc.elements) {
    const counts = index.owners.get(e.container)!;
    const n = (counts.get(e.key) ?? 0) + delta;
    if (n === 0) counts.delete(e.key);
    else counts.set(e.key, n);
  }
}

/**
 * Only what changed since `before`: the chains of `changedServices` (and any chain the kernel
 * lacks), the element differences, flushes of chains that fell out of use, deletion of unused
 * affinity sets. `alreadyStale` chains were flushed by an earlier sync and are left alone.
 *
 * `before.ports` (required) says what each service port wrote last time: a service port whose
 * objects are the same as then, and that is not among `changedServices`, is passed over, so the
 * plan costs what changed, not the size of the table (at 10,000 Services the old planner's sets
 * of every chain name and maps of every element cost more than the kernel's whole transaction).
 */
export function planPartialSync(
  ruleset: NftablesRuleset,
  before: KernelTable,
  changedServices: ReadonlySet<string>,
  alreadyStale: ReadonlySet<string>,
): SyncPlan {
  const index = before.ports;
  if (index === undefined) throw new Error("a partial sync needs the index of the last sync's service ports");
  const cmd = new Commands();
  const written: NftChain[] = [];
  const newChains: string[] = [];
  const newSets: NftContainer[] = [];
  /** Old and new objects of the service ports that changed (or went away, or are new). */
  const oldPorts: ServicePortObjects[] = [];
  const newPorts: ServicePortObjects[] = [];
  let present = 0;
  for (const svc of ruleset.services) {
    const old = index.byPort.get(svc.port);
    if (old !== undefined) present++;
    const changed = changedServices.size > 0 && changedServices.has(svc.service);
    if (old === svc && !changed) continue;
    if (old !== svc) {
      if (old !== undefined) oldPorts.push(old);
      newPorts.push(svc);
    }
    for (const c of svc.chains) {
      const known = before.chains.has(c.name);
      if (!known) newChains.push(c.name);
      if (changed || !known || alreadyStale.has(c.name)) written.push(c);
    }
    for (const s of svc.affinitySets) if (changed || !before.affinitySets.has(s.name)) newSets.push(s);
  }
  const removedPorts: string[] = [];
  if (present < index.byPort.size) {
    const ports = new Set(ruleset.services.map((s) => s.port));
    for (const [port, old] of index.byPort)
      if (!ports.has(port)) {
        removedPorts.push(port);
        oldPorts.push(old);
      }
  }

  // Chains and sets that fell out of use: those of the changed ports' old objects that their new
  // objects lack. Unless the table holds chains or sets no service port wrote (then every name
  // is checked, as a full sync does).
  const newChainNames = new Set<string>();
  const newSetNames = new Set<string>();
  for (const svc of newPorts) {
    for (const c of svc.chains) newChainNames.add(c.name);
    for (const s of svc.affinitySets) newSetNames.add(s.name);
  }
  const oldChainNames = new Set<string>();
  const oldSetNames = new Set<string>();
  for (const svc of oldPorts) {
    for (const c of svc.chains) oldChainNames.add(c.name);
    for (const s of svc.affinitySets) oldSetNames.add(s.name);
  }
  let staleKnown = 0;
  for (const c of alreadyStale) if (before.chains.has(c)) staleKnown++;
  const chainsAccounted = before.chains.size === index.chains + staleKnown;
  const setsAccounted = before.affinitySets.size === index.affinitySets;
  let all: ReadonlySet<string> | null = null;
  const allActive = (): ReadonlySet<string> => (all ??= serviceChainNames(ruleset));
  const activeChains: ReadonlySet<string> = chainsAccounted
    ? new DerivedSet(
        (c) =>
          newChainNames.has(c) || (before.chains.has(c) && !alreadyStale.has(c) && !oldChainNames.has(c)),
        allActive,
      )
    : allActive();
  const stale = (
    chainsAccounted
      ? [...oldChainNames].filter((c) => !newChainNames.has(c) && !alreadyStale.has(c))
      : [...before.chains].filter((c) => !activeChains.has(c) && !alreadyStale.has(c))
  ).sort();
  let unusedSets: string[];
  if (setsAccounted) unusedSets = [...oldSetNames].filter((n) => !newSetNames.has(n)).sort();
  else {
    const activeSets = affinitySetNames(ruleset);
    unusedSets = [...before.affinitySets].filter((n) => !activeSets.has(n)).sort();
  }

  for (const c of written) {
    cmd.addChain(c);
    cmd.chain("flush", c.name);
  }
  for (const c of stale) cmd.chain("flush", c);
  for (const s of newSets) cmd.addContainer(s);
  for (const s of unusedSets) cmd.container("delete", "set", s);
  for (const c of written) for (const r of c.rules) cmd.rule(c.name, r);

  // The element keys the changed ports had or have; each one's element in the new table is the
  // last service port's that has it (as a full sync's), looked up among every port only where a
  // port that did not change holds the key too.
  for (const svc of oldPorts) countPort(index, svc, -1);
  for (const svc of newPorts) countPort(index, svc, 1);
  for (const port of removedPorts) index.byPort.delete(port);
  for (const svc of newPorts) index.byPort.set(svc.port, svc);
  const touched = new Map<string, Map<string, NftElement | null>>();
  for (const c of ruleset.containers) touched.set(c.name, new Map());
  for (const svc of oldPorts) for (const e of svc.elements) touched.get(e.container)!.set(e.key, null);
  const ownedByChanged = new Map<string, Map<string, number>>();
  for (const svc of newPorts)
    for (const e of svc.elements) {
      touched.get(e.container)!.set(e.key, e);
      const counts = ownedByChanged.get(e.container) ?? new Map<string, number>();
      ownedByChanged.set(e.container, counts.set(e.key, (counts.get(e.key) ?? 0) + 1));
    }
  const shared = new Map<string, Set<string>>();
  for (const [name, keys] of touched)
    for (const key of keys.keys()) {
      const owners = index.owners.get(name)!.get(key) ?? 0;
      if (owners > (ownedByChanged.get(name)?.get(key) ?? 0)) {
        const set = shared.get(name) ?? new Set<string>();
        shared.set(name, set.add(key));
      }
    }
  if (shared.size > 0)
    for (const svc of ruleset.services)
      for (const e of svc.elements)
        if (shared.get(e.container)?.has(e.key) === true) touched.get(e.container)!.set(e.key, e);

  const adds: NftElement[] = [];
  for (const [name, keys] of touched) {
    const sigs = index.signatures.get(name)!;
    for (const [key, now] of keys) {
      const old = sigs.get(key);
      if (now === null) {
        if (old === undefined) continue;
        cmd.deleteElement(name, key);
        sigs.delete(key);
        continue;
      }
      const sig = signatureOf(now);
      if (old === sig) continue;
      if (old !== undefined) cmd.deleteElement(name, key);
      adds.push(now);
      sigs.set(key, sig);
    }
  }
  for (const e of adds) cmd.addElement(e);

  // Every chain this ruleset has that `before` lacks is among `written`; the others stay known.
  const chains = newChains.length === 0 ? before.chains : new LayeredSet(before.chains, newChains, []);
  const affinitySets =
    newSets.length === 0 && unusedSets.length === 0
      ? before.affinitySets
      : new LayeredSet(
          before.affinitySets,
          newSets.map((s) => s.name),
          unusedSets,
        );
  const after: KernelTable = { chains, affinitySets, elements: before.elements, ports: index };
  const commands = cmd.list;
  const text = transaction(ruleset.family, commands);
  return {
    get payload() {
      return text.payload;
    },
    commands,
    operations: commands.length,
    newlyStaleChains: stale,
    activeChains,
    after,
  };
}

/**
 * A set of names: `base` (never changed) with `extra` added and `removed` taken out. A partial
 * sync that adds or deletes a few names in a table of 100,000 would otherwise copy every name;
 * the changes since the last copy are carried along until they are a sixteenth of the base,
 * then everything is copied once.
 */
export class LayeredSet implements ReadonlySet<string> {
  private readonly base: ReadonlySet<string>;
  private readonly extra: ReadonlySet<string>;
  private readonly removed: ReadonlySet<string>;

  constructor(base: ReadonlySet<string>, extra: readonly string[], removed: readonly string[]) {
    const root = base instanceof LayeredSet ? base.base : base;
    const added = new Set(base instanceof LayeredSet ? base.extra : []);
    const gone = new Set(base instanceof LayeredSet ? base.removed : []);
    for (const n of removed) {
      added.delete(n);
      if (root.has(n)) gone.add(n);
    }
    for (const n of extra) {
      gone.delete(n);
      if (!root.has(n)) added.add(n);
    }
    if (added.size + gone.size > root.size / 16) {
      const all = new Set(root);
      for (const n of gone) all.delete(n);
      for (const n of added) all.add(n);
      this.base = all;
      this.extra = new Set();
      this.removed = new Set();
    } else {
      this.base = root;
      this.extra = added;
      this.removed = gone;
    }
  }

  get size(): number {
    return this.base.size - this.removed.size + this.extra.size;
  }

  has(value: string): boolean {
    return (this.base.has(value) && !this.removed.has(value)) || this.extra.has(value);
  }

  forEach(
    callback: (value: string, value2: string, set: ReadonlySet<string>) => void,
    thisArg?: unknown,
  ): void {
    for (const v of this) callback.call(thisArg, v, v, this);
  }

  *[Symbol.iterator](): SetIterator<string> {
    for (const v of this.base) if (!this.removed.has(v)) yield v;
    yield* this.extra;
  }

  *keys(): SetIterator<string> {
    yield* this;
  }

  *values(): SetIterator<string> {
    yield* this;
  }

  *entries(): SetIterator<[string, string]> {
    for (const v of this) yield [v, v];
  }
}

/** A set whose membership test is cheap and whose contents are listed only when asked for. */
class DerivedSet implements ReadonlySet<string> {
  constructor(
    private readonly test: (value: string) => boolean,
    private readonly list: () => ReadonlySet<string>,
  ) {}

  get size(): number {
    return this.list().size;
  }

  has(value: string): boolean {
    return this.test(value);
  }

  forEach(
    callback: (value: string, value2: string, set: ReadonlySet<string>) => void,
    thisArg?: unknown,
  ): void {
    for (const v of this) callback.call(thisArg, v, v, this);
  }

  [Symbol.iterator](): SetIterator<string> {
    return this.list().values();
  }

  keys(): SetIterator<string> {
    return this.list().values();
  }

  values(): SetIterator<string> {
    return this.list().values();
  }

  entries(): SetIterator<[string, string]> {
    return this.list().entries();
  }
}

/** The separate transaction that deletes chains stale for long enough. */
export function staleChainDeletion(family: "ip" | "ip6", chains: readonly string[]): NftTransaction {
  return transaction(
    family,
    chains.map((chain) => ({ verb: "delete", what: "chain", chain })),
  );
}

/**
 * A transaction whose `nft -f` text is printed when first read: the netlink writer encodes the
 * commands and never reads it, and at 10,000 Services that text is tens of megabytes.
 */
function transaction(family: "ip" | "ip6", commands: readonly NftCommand[]): NftTransaction {
  let text: string | undefined;
  return {
    get payload() {
      text ??= commands.map((c) => commandText(family, c) + "\n").join("");
      return text;
    },
    commands,
  };
}

/** What a kernel writer is given: the same transaction as text and as typed commands. */
export interface NftTransaction {
  readonly payload: string;
  /** May be listed anew at every read (a chunk of a large full sync): read it once per use. */
  readonly commands: readonly NftCommand[];
  /** How many commands, without listing them; absent = `commands.length`. */
  readonly size?: number;
  /**
   * The commands made one by one as they are read, for a writer that encodes them in order and
   * keeps none (a chunk of a large full sync); absent = `commands`.
   */
  readonly each?: () => Iterable<NftCommand>;
}

/** The commands of `t`, made as they are read where it can. */
export const transactionCommands = (t: NftTransaction): Iterable<NftCommand> => t.each?.() ?? t.commands;

/** The number of commands of `t`. */
export const transactionSize = (t: NftTransaction): number => t.size ?? t.commands.length;

/** A transaction whose commands are made by `list` at every read, and its text when first read. */
function lazyTransaction(
  family: "ip" | "ip6",
  size: number,
  list: () => Iterable<NftCommand>,
): NftTransaction {
  let text: string | undefined;
  return {
    get payload() {
      text ??= [...list()].map((c) => commandText(family, c) + "\n").join("");
      return text;
    },
    get commands() {
      return [...list()];
    },
    size,
    each: list,
  };
}

/** A full sync in several transactions, applied in order (`transactions`). */
export interface ChunkedSyncPlan extends SyncPlan {
  readonly transactions: readonly NftTransaction[];
}

/**
 * A large full sync in bounded transactions (the kernel's cost of one transaction grows faster
 * than its size, docs/nftables-mode.md): first the skeleton (table, base and fixed chains
 * rewritten, containers declared but not flushed, nodeport-ips), then `servicesPerTransaction`
 * Services at a time, each Service whole in one transaction (its chains rewritten, its affinity
 * sets, then its elements: the map entries switch to the new chains only once those are there),
 * and last the removal of what no Service uses (elements, then stale chains flushed, unused
 * affinity sets deleted). No transaction leaves a Service half-programmed, and the elements of an
 * unchanged Service are not touched, so its traffic keeps flowing throughout.
 *
 * Possible only when what the table's containers hold is known: `before` (what the last accepted
 * sync left) or a table that does not exist yet (`tableAbsent`). Otherwise null: the caller
 * falls back to one transaction that flushes and refills every container.
 */
export function planChunkedFullSync(
  ruleset: NftablesRuleset,
  existing: ExistingObjects | null,
  before: KernelTable | null,
  tableAbsent: boolean,
  options: FullSyncOptions & {
    readonly servicesPerTransaction: number;
    /**
     * `before` was read from the kernel just now: even a table small enough for one
     * transaction is then synced by difference (one transaction of it), as upstream's start-up
     * sync over an existing table.
     */
    readonly readFromKernel?: boolean;
    /** Endpoint chains the kernel holds with exactly their rules: left as they are. */
    readonly unchangedChains?: ReadonlySet<string>;
  },
): ChunkedSyncPlan | null {
  if (before === null && !tableAbsent) return null;
  const small = ruleset.services.length <= options.servicesPerTransaction;
  if (small && options.readFromKernel !== true) return null;
  const unchanged = options.unchangedChains ?? new Set<string>();
  const transactions: NftTransaction[] = [];
  let operations = 0;
  const emit = (cmd: Commands): void => {
    if (cmd.list.length === 0) return;
    operations += cmd.list.length;
    transactions.push(transaction(ruleset.family, cmd.list));
  };
  /**
   * A chunk's chains and rules are listed only when its transaction is encoded (and again
   * whenever asked): at 10,000 × 10 they are 460,000 commands, which the sync held all at once.
   */
  const emitLazy = (size: number, list: () => Iterable<NftCommand>): void => {
    if (size === 0) return;
    operations += size;
    transactions.push(lazyTransaction(ruleset.family, size, list));
  };
  const oldSig = (container: string, key: string): string | undefined =>
    before?.elements.get(container)?.get(key);

  const skeleton = new Commands();
  skeleton.list.push({ verb: "add", what: "table", comment: TABLE_COMMENT });
  if (options.resetBaseChains) {
    for (const c of ruleset.baseChains) {
      skeleton.addChain(c);
      skeleton.chain("delete", c.name);
    }
  }
  for (const c of [...ruleset.baseChains, ...ruleset.fixedChains]) {
    skeleton.addChain(c);
    skeleton.chain("flush", c.name);
  }
  for (const c of ruleset.containers) skeleton.addContainer(c);
  const np = ruleset.nodePortIPsSet;
  skeleton.addContainer(np);
  skeleton.container(ruleset.nodePortIPs === null ? "delete" : "flush", "set", np.name);
  for (const c of [...ruleset.baseChains, ...ruleset.fixedChains])
    for (const r of c.rules) skeleton.rule(c.name, r);
  for (const ip of ruleset.nodePortIPs ?? []) skeleton.addElement({ container: np.name, key: ip });
  emit(skeleton);

  const elements = elementsByContainer(ruleset);
  const written = new Map<string, Set<string>>([...elements.keys()].map((k) => [k, new Set<string>()]));
  for (let i = 0; i < ruleset.services.length; i += options.servicesPerTransaction) {
    const elementCmd = new Commands();
    const chunk = ruleset.services.slice(i, i + options.servicesPerTransaction);
    const rewritten = chunk.flatMap((svc) => svc.chains.filter((c) => !unchanged.has(c.name)));
    function* commands(): Generator<NftCommand> {
      for (const c of rewritten) {
        yield chainCommand(c);
        yield { verb: "flush", what: "chain", chain: c.name };
      }
      for (const svc of chunk)
        for (const container of svc.affinitySets) yield { verb: "add", what: "container", container };
      for (const c of rewritten)
        for (const rule of c.rules) yield { verb: "add", what: "rule", chain: c.name, rule };
      yield* elementCmd.list;
    }
    let size = 0;
    for (const c of rewritten) size += 2 + c.rules.length;
    for (const svc of chunk) size += svc.affinitySets.length;
    const cmd = elementCmd;
    for (const svc of chunk)
      for (const e of svc.elements) {
        const done = written.get(e.container)!;
        if (done.has(e.key)) continue;
        done.add(e.key);
        // The element the model holds for this key (several ports can share a ClusterIP).
        const now = elements.get(e.container)!.get(e.key)!;
        const old = oldSig(e.container, e.key);
        if (old === signature(now)) continue;
        if (old !== undefined) cmd.deleteElement(e.container, e.key);
        cmd.addElement(now);
      }
    emitLazy(size + cmd.list.length, commands);
  }

  const activeChains = serviceChainNames(ruleset);
  const activeSets = affinitySetNames(ruleset);
  const last = new Commands();
  for (const [name, old] of before?.elements ?? new Map<string, ReadonlyMap<string, string>>()) {
    const now = elements.get(name);
    for (const key of old.keys()) if (now?.has(key) !== true) last.deleteElement(name, key);
  }
  const known = new Set([...(existing?.chains ?? []), ...(before?.chains ?? [])]);
  const stale = [...known].filter((c) => isServiceChainName(c) && !activeChains.has(c)).sort();
  for (const c of stale) last.chain("flush", c);
  const knownSets = new Set([...(existing?.sets ?? []), ...(before?.affinitySets ?? [])]);
  for (const s of [...knownSets].filter((s) => isAffinitySetName(s) && !activeSets.has(s)).sort())
    last.container("delete", "set", s);
  emit(last);
  if (small && transactions.length > 1) {
    const parts = transactions.splice(0, transactions.length);
    transactions.push(
      lazyTransaction(ruleset.family, operations, function* () {
        for (const t of parts) yield* transactionCommands(t);
      }),
    );
  }

  return {
    get payload() {
      return transactions.map((t) => t.payload).join("");
    },
    get commands() {
      return transactions.flatMap((t) => t.commands);
    },
    operations,
    newlyStaleChains: stale,
    activeChains,
    after: kernelAfter(elements, withStale(activeChains, stale), activeSets),
    transactions,
  };
}
