/*
 * The one node:test process that runs inside the VM (scripts/vm/init.sh starts it): every
 * scenario module registers its tests on import, and node:test runs them one after another.
 */
import "./scenarios/kernel.ts";
