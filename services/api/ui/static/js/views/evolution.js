// Evolution view: a model's circuits across checkpoints (circuitEvolution). All edges ever seen
// are laid out once; the slider picks a checkpoint: its edges are drawn (width and colour from
// that checkpoint's scores), edges that appeared there are haloed green, absent ones hidden.
import { allPages } from "../api.js";
import { h, viewLink } from "../dom.js";
import { attachInspector, drawGraph, edgeWidth, signColour, summedEdges } from "../graph.js";
import { parseEdge } from "../names.js";
import { COMPONENTS, EDGES, legend } from "./circuit.js";

const STEPS = `query Ev($model: String!, $task: String!, $method: String!, $first: Int!, $after: String) {
  circuitEvolution(model: $model, task: $task, method: $method) {
    steps(first: $first, after: $after) { pageInfo { hasNextPage endCursor }
      nodes { checkpoint step edges appeared disappeared circuitId } } } }`;

export async function render(root, params, app) {
  const names = ["model", "task", "method"];
  const inputs = Object.fromEntries(names.map((n) => [n, h("input", { id: `evolution-${n}`, value: params.get(n) || "" })]));
  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (e) => {
        e.preventDefault();
        app.go("evolution", Object.fromEntries(names.map((n) => [n, inputs[n].value.trim()])));
      },
    },
    names.map((n) => h("label", {}, n, " ", inputs[n])),
    h("button", { type: "submit" }, "Show"),
  );
  root.append(h("h2", {}, "Circuit evolution across checkpoints"), form);
  if (!names.every((n) => inputs[n].value)) return;
  const vars = Object.fromEntries(names.map((n) => [n, inputs[n].value]));
  const steps = await allPages(STEPS, vars, (d) => d.circuitEvolution.steps);
  if (!steps.length) {
    root.append(h("p", {}, "No circuits for this model, task and method."));
    return;
  }
  const everEdges = [...new Set(steps.flatMap((s) => s.edges))].sort();
  const edges = everEdges.map((n) => ({ ...parseEdge(n), color: "#555", width: 2.5 }));
  // Role labels and hooks come from the last checkpoint's components (labels are per model).
  const last = await allPages(COMPONENTS, { id: steps[steps.length - 1].circuitId }, (d) => d.circuit.components);
  const known = new Map(last.map((c) => [c.name, { name: c.name, labels: c.labels, hookName: c.hookName }]));
  const nodes = [...new Set(edges.flatMap((e) => [e.source, e.target]))].map((name) => known.get(name) || { name });
  const slider = h("input", { type: "range", id: "evolution-slider", min: 0, max: steps.length - 1, step: 1, value: 0 });
  const label = h("strong", { id: "evolution-checkpoint" });
  const details = h("div", { class: "panel", id: "evolution-details" });
  const graphBox = h("div", { class: "graph", id: "evolution-graph" });
  const inspector = h("table", { class: "inspector" });
  root.append(
    h("p", { class: "threshold" }, "checkpoint ", slider, " ", label),
    h("div", { class: "split" }, graphBox, h("aside", {}, details, h("div", { class: "panel" }, h("h3", {}, "Inspector"), inspector), legend("green halo: edge appeared at this checkpoint"))),
  );
  const cy = drawGraph(graphBox, nodes, edges);
  attachInspector(cy, inspector);
  app.setGraph(cy, `evolution-${vars.model}`);

  // Each checkpoint's edge scores, fetched once when first shown: width and colour then follow
  // that checkpoint's importance and sign.
  const scores = new Map();
  const scoresAt = async (step) => {
    if (!scores.has(step.circuitId)) {
      const stepEdges = await allPages(EDGES, { id: step.circuitId }, (d) => d.circuit.edges);
      // summed over positions: a positional circuit's edges refine its summed ones
      scores.set(step.circuitId, new Map(summedEdges(stepEdges).map((e) => [e.name, e.score])));
    }
    return scores.get(step.circuitId);
  };
  let shownIndex = -1;
  const show = async (index) => {
    shownIndex = index;
    const step = steps[index];
    const score = await scoresAt(step);
    if (shownIndex !== index) return; // the slider moved on while this checkpoint loaded
    const maxAbs = Math.max(0, ...[...score.values()].map((v) => Math.abs(v ?? 0)));
    const present = new Set(step.edges);
    const appeared = new Set(index === 0 ? [] : step.appeared);
    cy.batch(() => {
      cy.edges().forEach((e) => {
        e.toggleClass("hidden", !present.has(e.id()));
        e.toggleClass("appeared", appeared.has(e.id()));
        const value = score.get(e.id()) ?? null;
        e.data({ score: value, width: edgeWidth(value, maxAbs), color: signColour(value) });
      });
    });
    label.textContent = `${step.checkpoint ?? "?"} (step ${step.step ?? "?"}, ${index + 1} of ${steps.length})`;
    graphBox.dataset.checkpoint = step.checkpoint ?? "";
    details.replaceChildren(
      h("h3", {}, `At ${step.checkpoint}`),
      h("p", {}, viewLink("circuit", { id: step.circuitId }, "open this circuit"), ` · ${step.edges.length} edges`),
      h("p", { class: "small" }, "appeared: ", h("span", { id: "appeared-list" }, index === 0 ? "—" : step.appeared.join(", ") || "—")),
      h("p", { class: "small" }, "disappeared: ", h("span", { id: "disappeared-list" }, step.disappeared.join(", ") || "—")),
    );
  };
  slider.addEventListener("input", () => show(Number(slider.value)).catch((err) => app.error(err)));
  await show(0);
}
