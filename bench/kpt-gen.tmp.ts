import { writeFileSync, mkdirSync } from "node:fs";
import { stringify } from "yaml";
import { syntheticManifests } from "./synthetic.ts";
const dir = process.argv[2]!; mkdirSync(dir, { recursive: true });
const { node, byNamespace } = syntheticManifests(Number(process.argv[3]), 10);
writeFileSync(`${dir}/node.yaml`, stringify(node));
for (const [ns, objs] of byNamespace) writeFileSync(`${dir}/${ns}.yaml`, objs.map((o) => stringify(o)).join("---\n"));
