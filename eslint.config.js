import js from "@eslint/js";
import tseslint from "typescript-eslint";

/**
 * Import boundaries (docs/architecture.md): which folder may import which. A pattern names the
 * folders a folder must not reach; `allowTypeImports` lets the pure core name a shell type
 * without depending on its code.
 */
const forbid = (files, groups, message, allowTypeImports = false) => ({
  files,
  rules: {
    "@typescript-eslint/no-restricted-imports": [
      "error",
      { patterns: [{ group: groups, message, allowTypeImports }] },
    ],
  },
});

export default tseslint.config(
  { ignores: ["node_modules/", "coverage/", "dist/", "test/e2e/artifacts/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": "error",
      "no-console": "off",
    },
  },
  forbid(
    ["src/ip.ts"],
    ["./**"],
    "src/ip.ts is the pure address module every folder may import; it imports nothing from src/.",
  ),
  forbid(
    ["src/kernel/**"],
    ["**/proxy/**", "**/backends/**", "**/netfilter/**", "**/server/**", "**/cli/**", "**/daemon/**", "**/source/**", "**/inspect/**", "**/sandbox/**"],
    "kernel/ runs processes and talks to the kernel; it knows no proxy model, mode or tool above it.",
    true,
  ),
  forbid(
    ["src/netfilter/**"],
    ["**/backends/**", "**/kernel/**", "**/server/**", "**/cli/**", "**/daemon/**", "**/source/**", "**/k8s/**"],
    "netfilter/ is pure parsing and tracing of rulesets; it never imports a backend or does I/O.",
  ),
  forbid(
    ["src/proxy/**", "src/inspect/**"],
    ["**/kernel/**", "**/backends/**", "**/server/**", "**/cli/**", "**/daemon/**", "**/source/**", "**/netfilter/**"],
    "proxy/ and inspect/ are the mode-independent model: no I/O, no mode (kernel types only as types).",
    true,
  ),
  forbid(
    ["src/server/**"],
    ["**/kernel/**", "**/backends/**", "**/cli/**", "**/daemon/**", "**/source/**"],
    "server/ serves what it is given; it never runs a kernel tool or picks a mode.",
  ),
  forbid(
    ["src/backends/**"],
    ["**/cli/**", "**/daemon/**", "**/server/**", "**/source/**"],
    "A backend renders and applies; wiring and serving happen in daemon/ and cli/.",
  ),
  forbid(
    ["src/backends/iptables/**"],
    ["../nftables/**", "../ipvs/**"],
    "One mode never imports another mode's folder: share through proxy/ or backends/types.ts.",
  ),
  forbid(
    ["src/backends/nftables/**"],
    ["../iptables/**", "../ipvs/**"],
    "One mode never imports another mode's folder: share through proxy/ or backends/types.ts.",
  ),
  forbid(
    ["src/daemon/**"],
    ["**/cli/**", "**/backends/*/**"],
    "daemon/ composes a mode it gets from the registry (backends/index.ts), never a mode's folder.",
  ),
  forbid(
    ["src/source/**", "src/k8s/**", "src/config/**"],
    ["**/backends/**", "**/cli/**", "**/daemon/**", "**/server/**", "**/netfilter/**"],
    "Sources, the API client and the configuration know no mode, server or CLI.",
  ),
);
