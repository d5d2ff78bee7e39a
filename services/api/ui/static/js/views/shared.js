// Shared-subcircuit view: several circuits (ids/aliases, or every circuit of a model and task);
// the edges in at least k of them (sharedSubcircuits with minSupport k) are highlighted, the
// rest of their union (minSupport 1) is drawn faded.
import { allPages } from "../api.js";
import { h } from "../dom.js";
import { attachInspector, drawGraph } from "../graph.js";

const SHARED = `query S($ids: [String!], $models: [String!], $tasks: [String!], $method: String,
  $k: Int!, $first: Int!, $after: String) {
  sharedSubcircuits(circuitIds: $ids, models: $models, tasks: $tasks, method: $method, minSupport: $k) {
    circuitIds edges(first: $first, after: $after) { pageInfo { hasNextPage endCursor }
      nodes { edge source target receiver support scores { circuitId score } } } } }`;
const HIGHLIGHT = "#e6550d";

function selection(params) {
  const ids = (params.get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean);
  if (ids.length) return { ids };
  const model = params.get("model");
  const task = params.get("task");
  if (!model || !task) return null;
  return { models: [model], tasks: [task], method: params.get("method") || null };
}

export async function render(root, params, app) {
  const field = (name, placeholder) =>
    h("input", { id: `shared-${name}`, name, value: params.get(name) || "", placeholder });
  const inputs = {
    ids: field("ids", "id or alias, comma-separated"),
    model: field("model", "or: model"),
    task: field("task", "task"),
    method: field("method", "method (optional)"),
  };
  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (e) => {
        e.preventDefault();
        const next = { k: params.get("k") || 2 };
        for (const [name, input] of Object.entries(inputs)) if (input.value.trim()) next[name] = input.value.trim();
        app.go("shared", next);
      },
    },
    Object.entries(inputs).map(([name, input]) => h("label", {}, name, " ", input)),
    h("button", { type: "submit" }, "Intersect"),
  );
  root.append(h("h2", {}, "Shared subcircuit"), form);
  const chosen = selection(params);
  if (!chosen) return;
  const vars = { ids: chosen.ids || null, models: chosen.models || null, tasks: chosen.tasks || null, method: chosen.method || null };
  const union = await allPages(SHARED, { ...vars, k: 1 }, (d) => d.sharedSubcircuits.edges);
  const supports = new Set(union.map((e) => e.support));
  const nCircuits = Math.max(2, ...supports);
  const k = Math.min(nCircuits, Math.max(1, Number(params.get("k") || 2)));
  const slider = h("input", { type: "range", id: "support", min: 1, max: nCircuits, step: 1, value: k });
  const kLabel = h("strong", { id: "support-value" }, String(k));
  const count = h("strong", { id: "shared-count" }, "…");
  const graphBox = h("div", { class: "graph", id: "shared-graph" });
  const inspector = h("table", { class: "inspector" });
  root.append(
    h("p", { class: "threshold" }, "edges in at least k circuits: k = ", slider, " ", kLabel, ` of ${nCircuits} · highlighted edges `, count),
    h(
      "div",
      { class: "split" },
      graphBox,
      h(
        "aside",
        {},
        h(
          "div",
          { class: "panel legend" },
          h("h3", {}, "Legend"),
          h("p", {}, h("span", { class: "swatch", style: `background:${HIGHLIGHT}` }), " in at least k circuits (sharedSubcircuits, minSupport k)"),
          h("p", {}, h("span", { class: "swatch", style: "background:#ddd" }), " in fewer (faded); width ∝ support"),
        ),
        h("div", { class: "panel" }, h("h3", {}, "Inspector"), inspector),
      ),
    ),
  );
  const edges = union.map((e) => ({ name: e.edge, source: e.source, target: e.target, receiver: e.receiver, support: e.support, color: "#999", width: 1 + (5 * e.support) / nCircuits }));
  const nodes = [...new Set(edges.flatMap((e) => [e.source, e.target]))].map((name) => ({ name }));
  const cy = drawGraph(graphBox, nodes, edges);
  attachInspector(cy, inspector, (el) =>
    el.isEdge() ? [["support", `${el.data("support")} of ${nCircuits}`], ["shared", el.hasClass("faded") ? "no" : "yes"]] : [],
  );
  app.setGraph(cy, "shared-subcircuit");

  const highlight = async (minSupport) => {
    const shared = await allPages(SHARED, { ...vars, k: minSupport }, (d) => d.sharedSubcircuits.edges);
    const names = new Set(shared.map((e) => e.edge));
    cy.batch(() => {
      cy.edges().forEach((e) => {
        const on = names.has(e.id());
        e.toggleClass("faded", !on);
        e.data("color", on ? HIGHLIGHT : "#999");
      });
      cy.nodes().forEach((n) => n.toggleClass("faded", n.connectedEdges().not(".faded").empty()));
    });
    count.textContent = String(names.size);
    graphBox.dataset.k = String(minSupport);
  };
  slider.addEventListener("change", () => {
    kLabel.textContent = slider.value;
    highlight(Number(slider.value)).catch((err) => app.error(err));
  });
  await highlight(k);
}
