// The faithfulness curve as a small inline SVG line chart (log-scaled x: % of edges kept).
// Hand-written because it is a dozen lines; a charting library would dwarf the viewer.
const NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

export function curveChart(percentages, series, { width = 300, height = 170 } = {}) {
  const pad = { l: 34, r: 16, t: 8, b: 28 };
  const xs = percentages.map((p) => Math.log10(p));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const all = series.flatMap((s) => s.values).filter((v) => typeof v === "number");
  const y0 = Math.min(0, ...all);
  const y1 = Math.max(1, ...all);
  const sx = (x) => pad.l + ((x - x0) / (x1 - x0 || 1)) * (width - pad.l - pad.r);
  const sy = (y) => height - pad.b - ((y - y0) / (y1 - y0 || 1)) * (height - pad.t - pad.b);
  const svg = svgEl("svg", { width, height, class: "curve", viewBox: `0 0 ${width} ${height}` });
  svg.append(svgEl("rect", { x: pad.l, y: pad.t, width: width - pad.l - pad.r, height: height - pad.t - pad.b, fill: "#fafafa", stroke: "#ccc" }));
  for (const y of [y0, 0.5 * (y0 + y1), y1]) {
    const t = svgEl("text", { x: pad.l - 4, y: sy(y) + 3, "text-anchor": "end", "font-size": 9 });
    t.textContent = y.toFixed(1);
    svg.append(t);
  }
  percentages.forEach((p, i) => {
    if (i % 3 && i !== percentages.length - 1) return;
    const t = svgEl("text", { x: sx(xs[i]), y: height - pad.b + 12, "text-anchor": "middle", "font-size": 9 });
    t.textContent = `${p}%`;
    svg.append(t);
  });
  const label = svgEl("text", { x: width / 2, y: height - 3, "text-anchor": "middle", "font-size": 9 });
  label.textContent = "edges kept (log scale)";
  svg.append(label);
  series.forEach((s, i) => {
    const points = s.values.map((v, i) => `${sx(xs[i])},${sy(v)}`).join(" ");
    svg.append(svgEl("polyline", { points, fill: "none", stroke: s.colour, "stroke-width": 2, class: "series" }));
    const t = svgEl("text", { x: pad.l + 6, y: pad.t + 14 * (i + 1), "font-size": 10, fill: s.colour });
    t.textContent = s.name;
    svg.append(t);
  });
  return svg;
}
