// Drawing a circuit with Cytoscape.js (vendored UMD build, global `cytoscape`): a preset layout
// whose positions come from each node's layer and head, so the picture is exactly layered:
// input at the bottom, one row per layer (heads by index, then the MLP), logits at the top.
import { parseNode } from "./names.js";

const ROW_HEIGHT = 120;
const COLUMN_WIDTH = 110;
export const POSITIVE = "#1f77b4";
export const NEGATIVE = "#d62728";
const LINE_STYLE = { Q: "dotted", K: "dashed", V: "solid" };

function row(node, nLayers) {
  if (node.kind === "EMBED") return 0;
  if (node.kind === "LOGITS") return nLayers + 1;
  return node.layer === null || node.layer === undefined ? 0 : node.layer + 1;
}

function order(a, b) {
  const rank = (n) => (n.kind === "ATTN_HEAD" ? 0 : n.kind === "MLP" ? 1 : 2);
  return rank(a) - rank(b) || (a.head ?? 0) - (b.head ?? 0) || a.name.localeCompare(b.name);
}

// Positions for node records ({name, kind, layer, head}); nodes missing fields get them from
// their canonical name.
export function layeredPositions(nodes) {
  const full = nodes.map((n) => ({ ...parseNode(n.name), ...n }));
  const nLayers = Math.max(-1, ...full.map((n) => n.layer ?? -1)) + 1;
  const rows = new Map();
  for (const node of full) {
    const r = row(node, nLayers);
    if (!rows.has(r)) rows.set(r, []);
    rows.get(r).push(node);
  }
  const positions = {};
  for (const [r, members] of rows) {
    members.sort(order);
    members.forEach((node, i) => {
      positions[node.name] = {
        x: (i - (members.length - 1) / 2) * COLUMN_WIDTH,
        y: (nLayers + 1 - r) * ROW_HEIGHT,
      };
    });
  }
  return positions;
}

const STYLE = [
  {
    selector: "node",
    style: {
      label: "data(label)",
      "text-wrap": "wrap",
      "text-valign": "center",
      "font-size": 11,
      width: 58,
      height: 30,
      shape: "ellipse",
      "background-color": "#eef2f7",
      "border-width": 1,
      "border-color": "#556",
    },
  },
  { selector: 'node[kind = "MLP"]', style: { shape: "rectangle", "background-color": "#f3efe6" } },
  {
    selector: 'node[kind = "EMBED"], node[kind = "LOGITS"]',
    style: { shape: "round-rectangle", width: 80, "background-color": "#e4e4e4" },
  },
  {
    selector: "node.labelled",
    style: { "border-width": 3, "border-color": "#7b3294", height: 40, width: 130 },
  },
  {
    selector: "edge",
    style: {
      width: "data(width)",
      "line-color": "data(color)",
      "target-arrow-color": "data(color)",
      "target-arrow-shape": "triangle",
      "arrow-scale": 0.7,
      "curve-style": "bezier",
      label: "data(rlabel)",
      "font-size": 9,
      "text-background-color": "#fff",
      "text-background-opacity": 0.8,
      "text-background-padding": 1,
    },
  },
  { selector: 'edge[receiver = "Q"]', style: { "line-style": LINE_STYLE.Q } },
  { selector: 'edge[receiver = "K"]', style: { "line-style": LINE_STYLE.K } },
  { selector: ":selected", style: { "overlay-color": "#fc0", "overlay-opacity": 0.35 } },
  { selector: ".faded", style: { opacity: 0.12 } },
  { selector: ".hidden", style: { display: "none" } },
  { selector: ".appeared", style: { "underlay-color": "#2ca02c", "underlay-opacity": 0.35, "underlay-padding": 4 } },
];

export function edgeWidth(score, maxAbs) {
  if (score === null || score === undefined || !maxAbs) return 2;
  return 1 + 7 * Math.min(1, Math.abs(score) / maxAbs);
}

export function signColour(score) {
  return score !== null && score !== undefined && score < 0 ? NEGATIVE : POSITIVE;
}

// nodes: [{name, kind?, layer?, head?, hookName?, score?, labels?}]
// edges: [{name, source, target, receiver?, score?, color?, width?, ...extra data}]
export function drawGraph(container, nodes, edges) {
  const maxAbs = Math.max(0, ...edges.map((e) => Math.abs(e.score ?? 0)));
  const positions = layeredPositions(nodes);
  const elements = [
    ...nodes.map((n) => {
      const node = { ...parseNode(n.name), ...n };
      const labels = node.labels || [];
      return {
        group: "nodes",
        data: { ...node, id: node.name, label: [node.name, ...labels].join("\n") },
        position: positions[node.name],
        classes: labels.length ? "labelled" : "",
        locked: true,
      };
    }),
    ...edges.map((e) => ({
      group: "edges",
      data: {
        ...e,
        id: e.name,
        rlabel: e.receiver ? e.receiver.toLowerCase() : "",
        width: e.width ?? edgeWidth(e.score, maxAbs),
        color: e.color ?? signColour(e.score),
      },
    })),
  ];
  const cy = window.cytoscape({
    container,
    elements,
    style: STYLE,
    layout: { name: "preset", fit: true, padding: 30 },
    autoungrabify: true,
  });
  cy.maxAbsScore = maxAbs;
  return cy;
}

// Shows what is known about the hovered or tapped node/edge in `panel`.
export function attachInspector(cy, panel, extra = () => []) {
  const show = (event) => {
    const d = event.target.data();
    const fmt = (v) =>
      typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : v ?? "—";
    const rows = event.target.isNode()
      ? [
          ["node", d.name],
          ["kind", d.kind],
          ["layer", d.layer],
          ["head", d.head],
          ["hook", d.hookName],
          ["score", d.score],
          ["role labels", (d.labels || []).join(", ") || "—"],
        ]
      : [
          ["edge", d.name],
          ["source", d.source],
          ["target", d.target],
          ["receiver", d.receiver ? d.receiver.toLowerCase() : "—"],
          ["score", d.score],
        ];
    rows.push(...extra(event.target));
    panel.replaceChildren(
      ...rows.map(([k, v]) => {
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        th.textContent = k;
        const td = document.createElement("td");
        td.textContent = fmt(v);
        tr.append(th, td);
        return tr;
      }),
    );
    panel.dataset.selected = d.id;
  };
  cy.on("mouseover tap", "node, edge", show);
}

// Hides edges whose |score| is below `fraction` of the largest |score|, and nodes left alone.
export function applyThreshold(cy, fraction) {
  const cut = fraction * (cy.maxAbsScore || 0);
  cy.batch(() => {
    cy.edges().forEach((e) => {
      const score = Math.abs(e.data("score") ?? Infinity);
      e.toggleClass("hidden", score < cut);
    });
  });
  return cy.edges().not(".hidden").length;
}

function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function exportPng(cy, name) {
  download(cy.png({ full: true, scale: 2, bg: "#ffffff", output: "blob" }), `${name}.png`);
}

export function exportSvg(cy, name) {
  const svg = cy.svg({ full: true, bg: "#ffffff" });
  download(new Blob([svg], { type: "image/svg+xml" }), `${name}.svg`);
}
