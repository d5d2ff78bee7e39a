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

// -- positions (issue 18) ------------------------------------------------------------------
// A positional circuit holds its summed edges (no position) and the positional edges that
// refine them. `summedEdges` is the circuit over all positions: each name's summed edge, or,
// for an import whose edges only come at positions, their scores added up.
export function summedEdges(edges) {
  const byName = new Map();
  for (const e of edges) {
    const seen = byName.get(e.name);
    if (!e.positional) byName.set(e.name, { ...e, summed: true });
    else if (!seen) byName.set(e.name, { ...e, position: null, span: null, positional: false });
    else if (!seen.summed) {
      seen.score = seen.score === null || e.score === null ? null : seen.score + e.score;
    }
  }
  return [...byName.values()].map(({ summed, ...e }) => e);
}

// Which column of the axis an entry is at: its span, or its token index's label.
export function positionLabel(entry) {
  if (entry.span !== null && entry.span !== undefined) return entry.span;
  return entry.position === null || entry.position === undefined ? null : String(entry.position);
}

// The prompt token under a column: tokens[index] where the label has one index.
function tokenOf(axis, i) {
  const index = axis.indices[i];
  return index === null || index === undefined ? "" : (axis.tokens[index] ?? "");
}

const POSITION_WIDTH = 74; // a node's slot inside a column
const COLUMN_GAP = 40;

// Positions for the nodes of a positional drawing: one column per axis label (left to right,
// in prompt order), one row per layer as in `layeredPositions`, each cell's nodes side by side.
export function positionalPositions(nodes, axis) {
  const full = nodes.map((n) => ({ ...parseNode(n.name), ...n }));
  const nLayers = Math.max(-1, ...full.map((n) => n.layer ?? -1)) + 1;
  const cells = new Map();
  for (const node of full) {
    const key = `${node.column}|${row(node, nLayers)}`;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(node);
  }
  const widest = axis.labels.map((_, c) =>
    Math.max(1, ...[...cells.entries()].filter(([k]) => k.startsWith(`${c}|`)).map(([, v]) => v.length)),
  );
  const left = [];
  widest.reduce((x, n, c) => ((left[c] = x), x + n * POSITION_WIDTH + COLUMN_GAP), 0);
  const positions = {};
  for (const [key, members] of cells) {
    const [c, r] = key.split("|").map(Number);
    members.sort(order);
    const start = left[c] + ((widest[c] - members.length) * POSITION_WIDTH) / 2;
    members.forEach((node, i) => {
      positions[node.id] = { x: start + (i + 0.5) * POSITION_WIDTH, y: (nLayers + 1 - r) * ROW_HEIGHT };
    });
  }
  axis.labels.forEach((_, c) => {
    positions[`token:${c}`] = { x: left[c] + (widest[c] * POSITION_WIDTH) / 2, y: (nLayers + 2) * ROW_HEIGHT };
  });
  return positions;
}

// Draws a positional circuit over its prompt's tokens: a column per position (axis label,
// with the token under it), the nodes of each position in it, and the positional edges
// between them. nodes: [{name, labels?, hookName?}] (role labels by name); components at a
// position add their score there; edges: the positional edges [{name, source, target,
// receiver, score, position, span}].
export function drawPositional(container, axis, components, edges) {
  const column = new Map(axis.labels.map((label, c) => [label, c]));
  const byName = new Map(components.filter((c) => !positionLabel(c)).map((c) => [c.name, c]));
  const nodes = new Map();
  const place = (name, label, extra = {}) => {
    const id = `${name}@${label}`;
    if (!nodes.has(id)) {
      const known = byName.get(name) || {};
      nodes.set(id, { ...known, score: null, name, id, column: column.get(label), at: label });
    }
    Object.assign(nodes.get(id), extra);
    return id;
  };
  for (const c of components) {
    const label = positionLabel(c);
    if (label !== null && column.has(label)) place(c.name, label, { score: c.score, position: c.position, span: c.span });
  }
  const positional = edges.filter((e) => column.has(positionLabel(e)));
  const maxAbs = Math.max(0, ...positional.map((e) => Math.abs(e.score ?? 0)));
  const edgeElements = positional.map((e) => {
    const label = positionLabel(e);
    return {
      group: "edges",
      data: {
        ...e,
        id: `${e.name}@${label}`,
        source: place(e.source, label, { position: e.position, span: e.span }),
        target: place(e.target, label, { position: e.position, span: e.span }),
        edgeSource: e.source,
        edgeTarget: e.target,
        rlabel: e.receiver ? e.receiver.toLowerCase() : "",
        width: edgeWidth(e.score, maxAbs),
        color: signColour(e.score),
      },
    };
  });
  const positions = positionalPositions([...nodes.values()], axis);
  const elements = [
    ...axis.labels.map((label, c) => ({
      group: "nodes",
      data: { id: `token:${c}`, label: `${label}\n${tokenOf(axis, c)}`, at: label, token: tokenOf(axis, c) },
      position: positions[`token:${c}`],
      classes: "token",
      locked: true,
    })),
    ...[...nodes.values()].map((n) => {
      const labels = n.labels || [];
      return {
        group: "nodes",
        data: { ...parseNode(n.name), ...n, label: [n.name, ...labels].join("\n") },
        position: positions[n.id],
        classes: labels.length ? "labelled" : "",
        locked: true,
      };
    }),
    ...edgeElements,
  ];
  const cy = window.cytoscape({
    container,
    elements,
    style: [...STYLE, ...POSITION_STYLE],
    layout: { name: "preset", fit: true, padding: 30 },
    autoungrabify: true,
  });
  cy.maxAbsScore = maxAbs;
  return cy;
}

const POSITION_STYLE = [
  { selector: "node.labelled", style: { width: 70, height: 40, "font-size": 9 } },
  {
    selector: "node.token",
    style: {
      shape: "round-rectangle",
      width: 66,
      height: 34,
      "background-color": "#fff8dc",
      "border-color": "#b8a36a",
      "font-family": "monospace",
      "font-size": 10,
      events: "no",
    },
  },
];
