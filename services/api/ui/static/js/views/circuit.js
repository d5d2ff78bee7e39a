// Circuit view: the layered graph of one circuit, an importance threshold, an inspector for the
// hovered node/edge, and the circuit's validation results (faithfulness curve, control table).
// A positional circuit (issue 18) is drawn over its prompt's tokens, a column per position,
// or summed over positions (the "positions" switch).
import { allPages, gql } from "../api.js";
import { curveChart } from "../chart.js";
import { faithfulness, h, num, table } from "../dom.js";
import {
  applyThreshold,
  attachInspector,
  drawGraph,
  drawPositional,
  positionLabel,
  summedEdges,
} from "../graph.js";

const META = `query Meta($id: String!) { circuit(id: $id) {
  id modelName taskName checkpoint step method ablation metric nEdges nComponents faithfulness
  faithfulnessGap faithfulnessUndefined tags aliases
  positions { mode labels indices tokens } } }`;
export const COMPONENTS = `query C($id: String!, $first: Int!, $after: String) { circuit(id: $id) {
  components(first: $first, after: $after) { pageInfo { hasNextPage endCursor }
  nodes { name kind layer head position span hookName score labels } } } }`;
export const EDGES = `query E($id: String!, $first: Int!, $after: String) { circuit(id: $id) {
  edges(first: $first, after: $after) { pageInfo { hasNextPage endCursor }
  nodes { name source target receiver score position span positional } } } }`;
const VALIDATION = `query V($id: String!, $first: Int!, $after: String) { circuit(id: $id) {
  validation(first: $first, after: $after) { pageInfo { hasNextPage endCursor }
  nodes { name ablation metric corruption values passed } } } }`;

function curvePanel(result) {
  const v = result.values;
  const series = [];
  if (v.faithfulness_abs) series.push({ name: "edges ranked by |score|", values: v.faithfulness_abs, colour: "#2ca02c" });
  if (v.faithfulness_signed) series.push({ name: "edges ranked by signed score", values: v.faithfulness_signed, colour: "#9467bd" });
  if (!v.percentages || !series.length) return null;
  return h(
    "div",
    { class: "panel", id: "faithfulness-curve" },
    h("h3", {}, "Faithfulness curve"),
    curveChart(v.percentages, series),
    h("p", { class: "small" }, `CPR ${num(v.cpr)} · CMD ${num(v.cmd)}`),
  );
}

function controlsPanel(result) {
  const rows = (result.values.rows || []).map((r) => [
    r.name,
    num(r.normalised),
    r.expectation,
    r.held === true ? "✔ held" : r.held === false ? "✘ not held" : "—",
  ]);
  return h(
    "div",
    { class: "panel" },
    h("h3", {}, "Ablation controls"),
    table(["control", "normalised", "expectation", "result"], rows, { id: "controls-table" }),
  );
}

function headline(result) {
  const v = result.values;
  const value = v[result.name];
  return [
    result.name,
    typeof value === "number" ? num(value) : "",
    result.passed === true ? "pass" : result.passed === false ? "fail" : "—",
  ];
}

export async function render(root, params, app) {
  const id = params.get("id");
  if (!id) {
    root.append(h("p", {}, "Choose a circuit in ", h("a", { href: "#browse" }, "Browse"), "."));
    return;
  }
  const meta = (await gql(META, { id })).circuit;
  if (!meta) throw new Error(`no circuit with id or alias ${id}`);
  const [components, edges, validation] = await Promise.all([
    allPages(COMPONENTS, { id }, (d) => d.circuit.components),
    allPages(EDGES, { id }, (d) => d.circuit.edges),
    allPages(VALIDATION, { id }, (d) => d.circuit.validation),
  ]);
  const axis = meta.positions;
  const summed = summedEdges(edges);
  const shown = h("span", { id: "edges-shown" }, String(axis ? 0 : summed.length));
  const modes = h(
    "select",
    { id: "position-view" },
    h("option", { value: "positions" }, "by position (over the prompt)"),
    h("option", { value: "summed" }, "summed over positions"),
  );
  const slider = h("input", { type: "range", id: "threshold", min: 0, max: 1, step: 0.01, value: 0 });
  const cut = h("span", { id: "threshold-value" }, "0.00");
  const graphBox = h("div", { class: "graph", id: "circuit-graph" });
  const inspector = h("table", { class: "inspector", id: "inspector" });
  const curve = validation.find((r) => r.name === "faithfulness_curve");
  const controls = validation.find((r) => r.name === "ablation_controls");
  root.append(
    h(
      "header",
      { class: "view-head" },
      h("h2", {}, `${meta.modelName} · ${meta.taskName} · ${meta.checkpoint ?? "final"}`),
      h(
        "p",
        { class: "small" },
        `${meta.id} · method ${meta.method} · ${meta.ablation}/${meta.metric} · `,
        `${meta.nComponents} components, ${meta.nEdges} edges · faithfulness `,
        faithfulness(meta.faithfulness, meta.faithfulnessGap, meta.faithfulnessUndefined, { id: "faithfulness-value" }),
        meta.faithfulnessUndefined ? ` (${meta.faithfulnessUndefined})` : "",
        meta.aliases.length ? ` · aliases ${meta.aliases.join(", ")}` : "",
        meta.tags.length ? ` · tags ${meta.tags.join(", ")}` : "",
      ),
      axis ? axisLine(axis, modes) : null,
      h(
        "label",
        { class: "threshold" },
        "importance threshold (fraction of max |score|) ",
        slider,
        cut,
        " · edges shown ",
        shown,
      ),
    ),
    h(
      "div",
      { class: "split" },
      graphBox,
      h(
        "aside",
        {},
        h("div", { class: "panel" }, h("h3", {}, "Inspector"), h("p", { class: "small" }, "Hover or tap a node or edge."), inspector),
        legend(),
        h(
          "div",
          { class: "panel" },
          h("h3", {}, "Validation"),
          validation.length
            ? table(["result", "value", "passed"], validation.map(headline), { id: "validation-table" })
            : h("p", {}, "Not validated."),
        ),
        curve ? curvePanel(curve) : null,
        controls ? controlsPanel(controls) : null,
      ),
    ),
  );
  let cy = null;
  const draw = () => {
    if (cy) cy.destroy();
    const byPosition = axis && modes.value === "positions";
    graphBox.dataset.view = byPosition ? "positions" : "summed";
    cy = byPosition
      ? drawPositional(graphBox, axis, components, edges.filter((e) => e.positional))
      : drawGraph(graphBox, oneByName(components), summed);
    attachInspector(cy, inspector, (el) => [
      ["position", el.data("position")],
      ["span", el.data("span")],
    ]);
    shown.textContent = String(applyThreshold(cy, Number(slider.value)));
    app.setGraph(cy, `circuit-${meta.id}`);
  };
  draw();
  modes.addEventListener("change", draw);
  slider.addEventListener("input", () => {
    cut.textContent = Number(slider.value).toFixed(2);
    shown.textContent = String(applyThreshold(cy, Number(slider.value)));
  });
}

// One node per component name (its unpositioned entry where it has one), for the summed drawing.
function oneByName(components) {
  const byName = new Map();
  for (const c of components) if (!byName.has(c.name) || !positionLabel(c)) byName.set(c.name, c);
  return [...byName.values()];
}

// The position axis of a positional circuit, and the switch between drawings.
function axisLine(axis, modes) {
  return h(
    "p",
    { class: "small", id: "position-axis" },
    `positions (${axis.mode}): ${axis.labels.join(" · ")} · `,
    h("label", {}, "draw ", modes),
  );
}

export function legend(...extra) {
  return h(
    "div",
    { class: "panel legend" },
    h("h3", {}, "Legend"),
    h("p", {}, h("span", { class: "swatch pos" }), " positive score ", h("span", { class: "swatch neg" }), " negative score"),
    h("p", {}, "width ∝ |score| · into q: dotted · k: dashed · v: solid (letter on the edge)"),
    h("p", {}, "purple border: component with a role label"),
    extra.map((line) => h("p", {}, line)),
  );
}
