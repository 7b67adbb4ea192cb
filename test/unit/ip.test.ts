import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  canonicalIP,
  cidrContains,
  cidrContainsSloppy,
  familyOf,
  formatAddress,
  formatCIDR,
  formatIP,
  familyOfSloppy,
  isLoopbackSloppy,
  isUnspecified,
  isZeroCIDR,
  joinHostPort,
  nthAddress,
  parseCIDR,
  parseCIDRSloppy,
  parseIP,
  parseIPSloppy,
  parseNetwork,
} from "../../src/ip.ts";
import type { Address } from "../../src/ip.ts";

test("IPv4 with leading zeros is decimal (ParseIPSloppy), as in TestBadIPs", () => {
  assert.equal(canonicalIP("172.30.0.041"), "172.30.0.41");
  assert.equal(canonicalIP("010.180.000.001"), "10.180.0.1");
  assert.equal(canonicalIP("10.180.00.001"), "10.180.0.1");
  assert.equal(canonicalIP("1.2.3.004"), "1.2.3.4");
  assert.equal(canonicalIP("192.168.099.022"), "192.168.99.22");
  assert.equal(canonicalIP("0000000001.2.3.4"), "1.2.3.4");
});

test("invalid addresses are rejected", () => {
  for (const s of [
    "",
    " 1.2.3.4",
    "1.2.3.4 ",
    "1.2.3",
    "1.2.3.4.5",
    "256.1.1.1",
    "1..2.3",
    "a.b.c.d",
    "1.2.3.4/32",
    "::1::",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7::8:9",
    "fe80::1%eth0",
    "12345::",
    ":1::",
    "1:",
    "1:2:3:4:5:6:7:8::",
    "::1.2.3",
    "1:2:3:4:5:6:7:1.2.3.4",
    "hello",
  ]) {
    assert.equal(parseIPSloppy(s), null, JSON.stringify(s));
  }
});

test("IPv6 is printed as Go's net.IP.String (RFC 5952)", () => {
  const cases: [string, string][] = [
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["FD00:10:180::1", "fd00:10:180::1"],
    ["::", "::"],
    ["::1", "::1"],
    ["1::", "1::"],
    ["0:0:0:0:0:0:0:0", "::"],
    ["1:0:0:2:0:0:0:3", "1:0:0:2::3"],
    ["::ffff:1.2.3.4", "1.2.3.4"],
    ["::ffff:0102:0304", "1.2.3.4"],
    ["::1.2.3.4", "::102:304"],
    ["::ffff:010.001.002.003", "10.1.2.3"],
    ["0001:0002::", "1:2::"],
    ["00001::", "1::"],
  ];
  for (const [input, want] of cases) assert.equal(canonicalIP(input), want, input);
  assert.equal(familyOfSloppy("::ffff:1.2.3.4"), "IPv4");
  assert.equal(familyOfSloppy("::1.2.3.4"), "IPv6");
  assert.equal(familyOfSloppy("nope"), null);
});

test("ParseCIDRSloppy prints the masked network", () => {
  assert.equal(parseCIDRSloppy("1.2.3.4/28")?.cidr, "1.2.3.0/28");
  assert.equal(parseCIDRSloppy("203.0.113.000/025")?.cidr, "203.0.113.0/25");
  assert.equal(parseCIDRSloppy("10.0.0.0/8")?.cidr, "10.0.0.0/8");
  assert.equal(parseCIDRSloppy("0.0.0.0/0")?.cidr, "0.0.0.0/0");
  assert.equal(parseCIDRSloppy("2001:db8::1/64")?.cidr, "2001:db8::/64");
  assert.equal(parseCIDRSloppy("::ffff:1.2.3.4/120")?.cidr, "1.2.3.0/24");
  assert.equal(parseCIDRSloppy("::ffff:1.2.3.4/120")?.family, "IPv4");
  assert.equal(parseCIDRSloppy("1.2.3.4/33"), null);
  assert.equal(parseCIDRSloppy("1.2.3.4/"), null);
  assert.equal(parseCIDRSloppy("1.2.3.4"), null);
  assert.equal(parseCIDRSloppy(" 1.2.3.4/28"), null, "trimming is the caller's job, as upstream");
  assert.equal(parseCIDRSloppy("1.2.3.4/2 8"), null);
  assert.equal(parseCIDRSloppy("::/129"), null);
});

test("cidrContainsSloppy, isLoopbackSloppy, isUnspecified, isZeroCIDR, joinHostPort", () => {
  assert.ok(cidrContainsSloppy("10.0.0.0/8", "10.1.2.3"));
  assert.ok(!cidrContainsSloppy("10.0.0.0/8", "11.1.2.3"));
  assert.ok(cidrContainsSloppy("192.168.0.0/24", "192.168.000.255"));
  assert.ok(!cidrContainsSloppy("::/0", "1.2.3.4"), "families never match");
  assert.ok(cidrContainsSloppy("fd00::/8", "fd00:10::1"));
  assert.ok(isLoopbackSloppy("127.0.0.1") && isLoopbackSloppy("127.255.0.1") && isLoopbackSloppy("::1"));
  assert.ok(!isLoopbackSloppy("128.0.0.1") && !isLoopbackSloppy("::2"));
  assert.ok(isUnspecified("0.0.0.0") && isUnspecified("::") && !isUnspecified("0.0.0.1"));
  assert.ok(isZeroCIDR("0.0.0.0/0") && isZeroCIDR("::/0") && !isZeroCIDR("0.0.0.0/1"));
  assert.equal(joinHostPort("10.0.0.1", 80), "10.0.0.1:80");
  assert.equal(joinHostPort("fd00::1", 80), "[fd00::1]:80");
});

const v4Bytes = fc.uint8Array({ minLength: 4, maxLength: 4 });
const v6Bytes = fc.uint8Array({ minLength: 16, maxLength: 16 });

test("property: printing then parsing an address round-trips", () => {
  fc.assert(
    fc.property(fc.oneof(v4Bytes, v6Bytes), (bytes) => {
      const s = formatIP(bytes);
      const parsed = parseIPSloppy(s);
      assert.ok(parsed !== null, s);
      assert.equal(formatIP(parsed.bytes), s);
      assert.equal(canonicalIP(s), s);
    }),
  );
});

test("property: leading zeros in IPv4 octets do not change the address", () => {
  fc.assert(
    fc.property(v4Bytes, fc.array(fc.nat(3), { minLength: 4, maxLength: 4 }), (bytes, pads) => {
      const padded = [...bytes].map((b, i) => "0".repeat(pads[i]!) + String(b)).join(".");
      assert.equal(canonicalIP(padded), formatIP(bytes));
    }),
  );
});

test("property: masking is idempotent and the network contains its own address", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        v4Bytes.chain((b) => fc.tuple(fc.constant(b), fc.integer({ min: 0, max: 32 }))),
        v6Bytes.chain((b) => fc.tuple(fc.constant(b), fc.integer({ min: 0, max: 128 }))),
      ),
      ([bytes, prefix]) => {
        const input = `${formatIP(bytes)}/${prefix}`;
        const once = parseCIDRSloppy(input);
        assert.ok(once !== null, input);
        const twice = parseCIDRSloppy(once.cidr);
        assert.equal(twice?.cidr, once.cidr);
        assert.ok(
          cidrContainsSloppy(once.cidr, formatIP(bytes)) || once.family !== familyOfSloppy(formatIP(bytes)),
        );
      },
    ),
  );
});

test("property: parsing arbitrary strings never throws", () => {
  fc.assert(
    fc.property(fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF.:/%x ") }), (s) => {
      parseIPSloppy(s);
      parseCIDRSloppy(s);
    }),
  );
});

// Strict parsing (the packet tracer, the web view, the sandbox).

test("property: IPv4 CIDR containment equals the bitwise definition", () => {
  fc.assert(
    fc.property(
      fc.nat({ max: 0xffffffff }),
      fc.nat({ max: 0xffffffff }),
      fc.nat({ max: 32 }),
      (a, b, prefix) => {
        const net = parseCIDR(`${formatAddress({ family: "IPv4", addr: a })}/${prefix}`);
        assert.ok(net);
        const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
        return cidrContains(net, { family: "IPv4", addr: b }) === ((a & mask) >>> 0 === (b & mask) >>> 0);
      },
    ),
  );
});

test("property: IPv6 parse/format round-trips to the canonical (RFC 5952) form", () => {
  fc.assert(
    fc.property(fc.ipV6(), (ip) => {
      const parsed = parseIP(ip);
      assert.ok(parsed, ip);
      const canonical = new URL(`http://[${ip}]/`).hostname.slice(1, -1);
      return formatAddress(parsed) === canonical;
    }),
  );
  assert.equal(parseIP("010.0.0.1"), undefined);
  assert.equal(parseCIDR("10.0.0.0/33"), undefined);
  assert.equal(parseCIDR("10.0.0.0/"), undefined);
});

test("IPv6 text round-trips through the numeric form, compressed (sandbox addresses)", () => {
  for (const ip of ["fd00:10:244::1", "::1", "::", "2001:db8:0:1:1:1:1:1", "fd00:10:244:1::7", "1::"]) {
    assert.equal(formatAddress(strict(ip)), ip);
  }
  assert.equal(formatAddress(strict("2001:db8:0:0:1:0:0:1")), "2001:db8::1:0:0:1");
});

test("parseNetwork normalises CIDRs; nthAddress and cidrContains find gateways and members", () => {
  const v4 = parseNetwork("10.244.0.77/24");
  assert.ok(v4);
  assert.equal(formatCIDR(v4), "10.244.0.0/24");
  assert.equal(formatAddress(nthAddress(v4, 1)), "10.244.0.1");
  assert.ok(cidrContains(v4, strict("10.244.0.255")));
  assert.ok(!cidrContains(v4, strict("10.244.1.0")));
  assert.ok(!cidrContains(v4, strict("fd00::1")));
  const v6 = parseNetwork("fd00:10:244:1::/64");
  assert.ok(v6);
  assert.equal(formatAddress(nthAddress(v6, 1)), "fd00:10:244:1::1");
  assert.ok(cidrContains(v6, strict("fd00:10:244:1:ffff::9")));
  assert.equal(parseNetwork("10.0.0.0/33"), undefined);
  assert.equal(parseNetwork("10.0.0.0"), undefined);
});

test("familyOf: strict, of an address or a CIDR's address", () => {
  assert.equal(familyOf("10.0.0.1"), "IPv4");
  assert.equal(familyOf("10.0.0.0/8"), "IPv4");
  assert.equal(familyOf("fd00::/64"), "IPv6");
  assert.equal(familyOf("010.0.0.1"), null);
  assert.equal(familyOf(""), null);
});

function strict(text: string): Address {
  const address = parseIP(text);
  assert.ok(address, text);
  return address;
}
