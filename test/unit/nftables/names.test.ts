/** Chain names as upstream computes them (Test_servicePortChainNameBase and its endpoint twin). */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { ServicePortName } from "../../../src/proxy/types.ts";
import {
  servicePortChainNameBase,
  servicePortEndpointChainNameBase,
} from "../../../src/backends/nftables/names.ts";

const LONG: ServicePortName = {
  namespace: "very-long-namespace-name-abcdefghijklmnopqrstuvwxyz0123456789xx",
  name: "very-long-service-name-why-would-you-even-do-this-i-mean-really",
  port: "port-443-providing-the-hypertext-transmission-protocol-with-tls",
  protocol: "SCTP",
};
const LONG_NAME = `${LONG.namespace}/${LONG.name}/sctp/${LONG.port}`;
const simple = (port: string): ServicePortName => ({
  namespace: "testing",
  name: "service",
  port,
  protocol: "TCP" as const,
});

test("service port chain bases match upstream's vectors", () => {
  assert.equal(servicePortChainNameBase(simple("http"), "tcp"), "P4ZYZVCF-testing/service/tcp/http");
  assert.equal(servicePortChainNameBase(simple("https"), "tcp"), "LZBRENCP-testing/service/tcp/https");
  assert.equal(servicePortChainNameBase(LONG, "sctp"), `KR6NACJP-${LONG_NAME}`);
});

test("endpoint chain bases match upstream's vectors, IPv6 and truncation included", () => {
  const ep = (ip: string, port: number, spn = simple("http"), proto = "tcp") =>
    servicePortEndpointChainNameBase(spn, proto, ip, port);
  assert.equal(ep("10.180.0.1", 80), "JO2XBXZR-testing/service/tcp/http__10.180.0.1/80");
  assert.equal(ep("10.180.0.2", 80), "5S6H3H22-testing/service/tcp/http__10.180.0.2/80");
  assert.equal(
    ep("fd80:abcd:12::a1b2:c3d4:e5f6:9999", 80),
    "U7E2ET36-testing/service/tcp/http__fd80.abcd.12..a1b2.c3d4.e5f6.9999/80",
  );
  assert.equal(
    ep("1234:5678:9abc:def0::abc:1234", 443, LONG, "sctp"),
    `5YS7AFEA-${LONG_NAME}__1234.5678.9abc.def0..abc.1234/443`,
  );
  assert.equal(
    ep("1234:5678:9abc:def0::abcd:1234:5678", 443, LONG, "sctp"),
    `CI6C53Q3-${LONG_NAME}__1234.5678.9abc.def0..abcd.1234...`,
  );
  assert.equal(
    ep("1234:5678:9abc:def0::abcd:1234:8765", 443, LONG, "sctp"),
    `2FLXFK6X-${LONG_NAME}__1234.5678.9abc.def0..abcd.1234...`,
  );
});
