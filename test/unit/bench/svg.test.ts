import { test } from "node:test";
import assert from "node:assert/strict";
import { lineChart } from "../../../bench/svg.ts";

const chart = lineChart({
  title: "t <&>",
  subtitle: "s",
  xLabel: "Services",
  yLabel: "ms",
  series: [
    {
      name: "iptables",
      points: [
        { x: 100, y: 0.2 },
        { x: 1000, y: 0.3 },
        { x: 10000, y: 6.6 },
      ],
    },
    {
      name: "nftables",
      points: [
        { x: 100, y: 0.2 },
        { x: 10000, y: 0.1 },
      ],
    },
  ],
});

test("one line and one marker per point for each series, names escaped", () => {
  assert.match(chart, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.equal(chart.match(/<path /g)?.length, 2);
  assert.equal(chart.match(/<circle /g)?.length, 5);
  assert.match(chart, /t &lt;&amp;&gt;/);
});

test("the y axis reaches past the largest value and the x axis starts at its decade", () => {
  const yTicks = [...chart.matchAll(/text-anchor="end" dominant-baseline="middle">([0-9.]+)</g)].map((m) =>
    Number(m[1]),
  );
  assert.ok(Math.max(...yTicks) >= 6.6, `ticks ${yTicks.join(",")}`);
  const xTicks = [...chart.matchAll(/text-anchor="middle">([0-9,]+)</g)].map((m) => m[1]);
  assert.deepEqual(xTicks, ["100", "1,000", "10,000"]);
});

test("a series can share another's colour and be drawn dashed, in the legend too", () => {
  const svg = lineChart({
    title: "t",
    subtitle: "s",
    xLabel: "x",
    yLabel: "y",
    series: [
      {
        name: "ours",
        points: [
          { x: 1000, y: 2 },
          { x: 10000, y: 20 },
        ],
      },
      {
        name: "bare",
        colour: 0,
        dash: "dashed",
        points: [
          { x: 1000, y: 1 },
          { x: 10000, y: 15 },
        ],
      },
    ],
  });
  const paths = [...svg.matchAll(/<path [^>]*stroke="(#[0-9a-f]+)"[^>]*\/>/g)];
  assert.equal(paths.length, 2);
  assert.equal(paths[0]![1], paths[1]![1]);
  assert.doesNotMatch(paths[0]![0], /stroke-dasharray/);
  assert.match(paths[1]![0], /stroke-dasharray/);
  assert.equal(svg.match(/<line [^>]*stroke-width="3" stroke-dasharray/g)?.length, 1);
});
