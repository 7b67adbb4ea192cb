import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeGeneration, generationRequest } from "../../../src/kernel/nft-generation.ts";

test("NFT_MSG_GETGEN: the request's header, and the id read from NFT_MSG_NEWGEN's answer", () => {
  const req = generationRequest(42);
  assert.equal(req.length, 20);
  assert.equal(req.readUInt32LE(0), 20);
  assert.equal(req.readUInt16LE(4), (10 << 8) | 16);
  assert.equal(req.readUInt16LE(6), 0x1 | 0x4);
  assert.equal(req.readUInt32LE(8), 42);
  // NEWGEN: header, nfgenmsg, NFTA_GEN_ID (u32, big-endian), NFTA_GEN_PROC_PID; then an ACK.
  const answer = Buffer.alloc(16 + 4 + 8 + 8 + 36);
  answer.writeUInt32LE(36, 0);
  answer.writeUInt16LE((10 << 8) | 15, 4);
  answer.writeUInt32LE(42, 8);
  answer.writeUInt16LE(8, 20);
  answer.writeUInt16LE(1, 22);
  answer.writeUInt32BE(123456, 24);
  answer.writeUInt16LE(8, 28);
  answer.writeUInt16LE(2, 30);
  answer.writeUInt32BE(99, 32);
  answer.writeUInt32LE(36, 36);
  answer.writeUInt16LE(2, 40);
  assert.equal(decodeGeneration(answer), 123456);
  assert.equal(decodeGeneration(answer.subarray(36)), undefined, "an ACK alone holds none");
  assert.equal(decodeGeneration(Buffer.alloc(3)), undefined);
});
