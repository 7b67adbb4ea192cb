/**
 * A line chart as a stand-alone SVG (pure): log-scale x (counts of Services), linear y from 0,
 * one coloured line with markers per series, a legend. Small on purpose: the benchmarks need
 * a picture a person can read, not a plotting library.
 */

export interface Series {
  readonly name: string;
  readonly points: readonly { readonly x: number; readonly y: number }[];
  /** Index into the palette (default: the series' own index), so related lines can share one. */
  readonly colour?: number;
  readonly dash?: "dashed" | "dotted";
}

export interface ChartSpec {
  readonly title: string;
  readonly subtitle: string;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly series: readonly Series[];
}

const WIDTH = 760;
const HEIGHT = 440;
const PAD = { left: 70, right: 180, top: 60, bottom: 60 };
const COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
const DASHES = { dashed: ' stroke-dasharray="8 5"', dotted: ' stroke-dasharray="2 4"' } as const;

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** 1, 2, 5 × 10^k steps covering [0, max] in about five ticks. */
function yTicks(max: number): number[] {
  if (max <= 0) return [0, 1];
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let v = 0; ticks.length < 2 || ticks[ticks.length - 1]! < max; v += step)
    ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

const label = (v: number) => (v >= 1000 ? v.toLocaleString("en-US") : String(v));

export function lineChart(spec: ChartSpec): string {
  const points = spec.series.flatMap((s) => s.points);
  const xs = points.map((p) => p.x).filter((x) => x > 0);
  const xMin = 10 ** Math.floor(Math.log10(Math.min(...xs, 1e9)));
  const xMax = Math.max(...xs, xMin * 10);
  const ticksY = yTicks(Math.max(...points.map((p) => p.y), 0) * 1.05);
  const yMax = ticksY[ticksY.length - 1]!;
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const lx = (x: number) =>
    PAD.left + ((Math.log10(x) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * plotW;
  const ly = (y: number) => PAD.top + plotH - (y / yMax) * plotH;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${PAD.left}" y="24" font-size="15" font-weight="bold">${esc(spec.title)}</text>`,
    `<text x="${PAD.left}" y="42" fill="#555">${esc(spec.subtitle)}</text>`,
  ];
  for (const t of ticksY) {
    const y = ly(t).toFixed(1);
    out.push(`<line x1="${PAD.left}" x2="${PAD.left + plotW}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(
      `<text x="${PAD.left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${label(t)}</text>`,
    );
  }
  for (let e = Math.ceil(Math.log10(xMin)); 10 ** e <= xMax * 1.0001; e++) {
    const x = lx(10 ** e).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${PAD.top}" y2="${PAD.top + plotH}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x}" y="${PAD.top + plotH + 18}" text-anchor="middle">${label(10 ** e)}</text>`);
  }
  out.push(
    `<rect x="${PAD.left}" y="${PAD.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`,
    `<text x="${PAD.left + plotW / 2}" y="${HEIGHT - 14}" text-anchor="middle">${esc(spec.xLabel)}</text>`,
    `<text transform="translate(18 ${PAD.top + plotH / 2}) rotate(-90)" text-anchor="middle">${esc(spec.yLabel)}</text>`,
  );
  spec.series.forEach((s, i) => {
    const colour = COLOURS[(s.colour ?? i) % COLOURS.length]!;
    const dash = s.dash === undefined ? "" : DASHES[s.dash];
    const pts = [...s.points].filter((p) => p.x > 0).sort((a, b) => a.x - b.x);
    if (pts.length > 1) {
      const d = pts
        .map((p, k) => `${k === 0 ? "M" : "L"}${lx(p.x).toFixed(1)},${ly(p.y).toFixed(1)}`)
        .join(" ");
      out.push(`<path d="${d}" fill="none" stroke="${colour}" stroke-width="2"${dash}/>`);
    }
    for (const p of pts) {
      out.push(
        `<circle cx="${lx(p.x).toFixed(1)}" cy="${ly(p.y).toFixed(1)}" r="3.5" fill="${colour}"><title>${esc(`${s.name}: ${label(p.x)} → ${p.y}`)}</title></circle>`,
      );
    }
    const ly0 = PAD.top + 10 + i * 20;
    out.push(
      `<line x1="${PAD.left + plotW + 16}" x2="${PAD.left + plotW + 40}" y1="${ly0}" y2="${ly0}" stroke="${colour}" stroke-width="3"${dash}/>`,
      `<text x="${PAD.left + plotW + 46}" y="${ly0}" dominant-baseline="middle">${esc(s.name)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
