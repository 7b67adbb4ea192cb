/**
 * The feature gates kube-proxy 1.35 accepts on `--feature-gates` / `featureGates` (upstream
 * pkg/features/kube_features.go plus component-base's logging and z-pages gates): the ones the
 * proxy consults and the common ones a DaemonSet is likely to pass. As upstream's
 * featuregate.Set, an unknown name is an error, and so is a GA gate locked to its default set to
 * the other value.
 */
interface KnownGate {
  readonly default: boolean;
  /** GA with LockToDefault: setting the other value is refused. */
  readonly locked: boolean;
}

const GATES: Readonly<Record<string, KnownGate>> = {
  // Consulted by kube-proxy.
  LoadBalancerIPMode: { default: true, locked: true },
  NFTablesProxyMode: { default: true, locked: true },
  PreferSameTrafficDistribution: { default: true, locked: true },
  MultiCIDRServiceAllocator: { default: true, locked: false },
  ServiceTrafficDistribution: { default: true, locked: false },
  TopologyAwareHints: { default: true, locked: false },
  WindowsDSR: { default: false, locked: false },
  WinDSR: { default: false, locked: false },
  WinOverlay: { default: true, locked: false },
  // component-base: every component registers these.
  AllAlpha: { default: false, locked: false },
  AllBeta: { default: false, locked: false },
  ComponentFlagz: { default: false, locked: false },
  ComponentStatusz: { default: false, locked: false },
  ContextualLogging: { default: true, locked: false },
  LoggingAlphaOptions: { default: false, locked: false },
  LoggingBetaOptions: { default: true, locked: false },
};

/** Upstream's messages, one per gate that cannot be set. */
export function featureGateProblems(gates: Readonly<Record<string, boolean>>): string[] {
  const problems: string[] = [];
  for (const [name, value] of Object.entries(gates)) {
    const known = Object.hasOwn(GATES, name) ? GATES[name] : undefined;
    if (known === undefined) problems.push(`featureGates: unrecognized feature gate: ${name}`);
    else if (known.locked && value !== known.default)
      problems.push(
        `featureGates: cannot set feature gate ${name} to ${value}, feature is locked to ${known.default}`,
      );
  }
  return problems;
}
