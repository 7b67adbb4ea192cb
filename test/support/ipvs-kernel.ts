/** ipvs mode's kernel seam over the fakes of src/kernel/fake-ipvs.ts and src/kernel/fake.ts. */
import { DUMMY_DEVICE } from "../../src/backends/ipvs/names.ts";
import type { IpvsKernel } from "../../src/backends/ipvs/proxier.ts";
import { FakeIptables } from "../../src/kernel/fake.ts";
import { FakeInterfaces, FakeIpsets, FakeIpvs } from "../../src/kernel/fake-ipvs.ts";

export interface FakeIpvsNode {
  readonly ipvs: FakeIpvs;
  readonly ipsets: FakeIpsets;
  readonly interfaces: FakeInterfaces;
  readonly ipt: FakeIptables;
  readonly kernel: IpvsKernel;
}

export function fakeIpvsNode(interfaces: Readonly<Record<string, readonly string[]>> = {}): FakeIpvsNode {
  const ipvs = new FakeIpvs();
  const ipsets = new FakeIpsets();
  const ifs = new FakeInterfaces(interfaces);
  const ipt = new FakeIptables();
  const kernel: IpvsKernel = {
    listIpvs: async () => ipvs.list(),
    restoreIpvs: async (lines) => ipvs.restore(lines),
    saveIpsets: async () => ipsets.save(),
    restoreIpsets: async (lines) => ipsets.restore(lines),
    ensureDummyDevice: async () => ifs.ensureDummy(DUMMY_DEVICE),
    addressesByInterface: async () => new Map([...ifs.byName].map(([k, v]) => [k, [...v]])),
    addAddress: async (ip) => ifs.add(DUMMY_DEVICE, ip),
    deleteAddress: async (ip) => ifs.delete(DUMMY_DEVICE, ip),
    ipt,
  };
  return { ipvs, ipsets, interfaces: ifs, ipt, kernel };
}
