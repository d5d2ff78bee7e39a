// Compare view: circuits a and b overlaid on one layered graph, each edge coloured by where it
// is (only a, only b, both), beside the consistency report from compareCircuits.
import { allPages, gql } from "../api.js";
import { h, num, table } from "../dom.js";
import { attachInspector, drawGraph } from "../graph.js";
import { parseEdge } from "../names.js";

export const COLOURS = { onlyA: "#ff7f0e", onlyB: "#9467bd", both: "#2ca02c" };
const REPORT = `query Cmp($a: String!, $b: String!) { compareCircuits(a: $a, b: $b) {
  a { id modelName checkpoint } b { id modelName checkpoint }
  consistency { alignment edgeJaccard nodeJaccard weightedOverlap rankCorrelation sharedEdges
    canonicalCosine roleAlignedCosine performanceA performanceB performanceAgrees tolerance
    note } } }`;
const part = (field) => `query P($a: String!, $b: String!, $first: Int!, $after: String) {
  compareCircuits(a: $a, b: $b) { ${field}(first: $first, after: $after) {
    pageInfo { hasNextPage endCursor } nodes } } }`;

export async function render(root, params, app) {
  const a = h("input", { id: "compare-a", value: params.get("a") || "", placeholder: "id or alias" });
  const b = h("input", { id: "compare-b", value: params.get("b") || "", placeholder: "id or alias" });
  const form = h(
    "form",
    { class: "filters", onsubmit: (e) => { e.preventDefault(); app.go("compare", { a: a.value.trim(), b: b.value.trim() }); } },
    h("label", {}, "circuit a ", a),
    h("label", {}, "circuit b ", b),
    h("button", { type: "submit" }, "Compare"),
  );
  root.append(h("h2", {}, "Compare two circuits"), form);
  if (!a.value || !b.value) return;
  const vars = { a: a.value, b: b.value };
  const report = (await gql(REPORT, vars)).compareCircuits;
  const sets = {};
  for (const field of Object.keys(COLOURS)) {
    sets[field] = await allPages(part(field), vars, (d) => d.compareCircuits[field]);
  }
  const edges = Object.entries(sets).flatMap(([where, names]) =>
    names.map((n) => ({ ...parseEdge(n), where, color: COLOURS[where], width: where === "both" ? 4 : 2.5 })),
  );
  const nodes = [...new Set(edges.flatMap((e) => [e.source, e.target]))].map((name) => ({ name }));
  const c = report.consistency;
  const graphBox = h("div", { class: "graph", id: "compare-graph" });
  const inspector = h("table", { class: "inspector" });
  const key = (where, label) =>
    h("p", {}, h("span", { class: "swatch", style: `background:${COLOURS[where]}` }), ` ${label}: `, h("strong", { id: `count-${where}` }, String(sets[where].length)));
  root.append(
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
          h("h3", {}, "Edges"),
          key("onlyA", `only in a (${report.a.checkpoint ?? report.a.id})`),
          key("onlyB", `only in b (${report.b.checkpoint ?? report.b.id})`),
          key("both", "in both"),
        ),
        h(
          "div",
          { class: "panel" },
          h("h3", {}, "Consistency report"),
          table(
            ["measure", "value"],
            [
              ["alignment", c.alignment],
              ["edge Jaccard", num(c.edgeJaccard)],
              ["node Jaccard", num(c.nodeJaccard)],
              ["weighted overlap", num(c.weightedOverlap)],
              ["rank correlation", num(c.rankCorrelation)],
              ["shared edges", String(c.sharedEdges)],
              ["cosine (canonical)", num(c.canonicalCosine)],
              ["cosine (role-aligned)", num(c.roleAlignedCosine)],
              ["performance a", num(c.performanceA)],
              ["performance b", num(c.performanceB)],
              ["performance agrees", c.performanceAgrees === null ? "—" : String(c.performanceAgrees)],
              ["note", c.note || "—"],
            ],
            { id: "consistency-table" },
          ),
        ),
        h("div", { class: "panel" }, h("h3", {}, "Inspector"), inspector),
      ),
    ),
  );
  const cy = drawGraph(graphBox, nodes, edges);
  attachInspector(cy, inspector, (el) => (el.isEdge() ? [["in", el.data("where")]] : []));
  app.setGraph(cy, `compare-${report.a.id}-${report.b.id}`);
}
