// Browse and search: circuits filtered by model, task, method, checkpoint, tag and alias, one
// Relay page at a time (a stack of cursors gives "previous"); pick rows to compare or intersect.
import { gql } from "../api.js";
import { h, num, viewLink } from "../dom.js";

const PAGE = 20;
const FIELDS = ["model", "task", "method", "checkpoint", "tag", "alias"];
const CIRCUITS = `query Browse($filter: CircuitFilterInput, $first: Int!, $after: String) {
  circuits(filter: $filter, first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { id modelName taskName checkpoint step method nEdges faithfulness tags aliases } } }`;

export async function render(root, params) {
  const inputs = Object.fromEntries(
    FIELDS.map((f) => [f, h("input", { name: f, id: `filter-${f}`, value: params.get(f) || "", placeholder: "any" })]),
  );
  const results = h("div", { id: "browse-results" });
  const pager = h("p", { class: "pager" });
  const picked = new Set();
  const actions = h("p", { class: "actions" });
  const cursors = [null];
  let page = 0;

  const filter = () => {
    const f = {};
    for (const name of FIELDS) if (inputs[name].value.trim()) f[name] = inputs[name].value.trim();
    return f;
  };

  const refreshActions = () => {
    const ids = [...picked];
    actions.replaceChildren(
      `${ids.length} selected: `,
      ids.length === 2 ? viewLink("compare", { a: ids[0], b: ids[1] }, "compare these two") : "pick two to compare",
      " · ",
      ids.length >= 2 ? viewLink("shared", { ids: ids.join(","), k: 2 }, "shared subcircuit") : "pick two or more for the shared subcircuit",
    );
  };

  const load = async () => {
    const data = await gql(CIRCUITS, { filter: filter(), first: PAGE, after: cursors[page] });
    const conn = data.circuits;
    cursors[page + 1] = conn.pageInfo.endCursor;
    const rows = conn.nodes.map((c) =>
      h(
        "tr",
        { dataset: { id: c.id } },
        h("td", {}, h("input", {
          type: "checkbox",
          checked: picked.has(c.id),
          "aria-label": `select ${c.id}`,
          onchange: (e) => { e.target.checked ? picked.add(c.id) : picked.delete(c.id); refreshActions(); },
        })),
        h("td", {}, viewLink("circuit", { id: c.id }, c.id)),
        h("td", {}, c.modelName),
        h("td", {}, c.taskName),
        h("td", {}, c.checkpoint ?? "—"),
        h("td", {}, c.method),
        h("td", {}, String(c.nEdges)),
        // The list reads summaries only; why a figure is undefined is on the circuit's page
        // (it needs the circuit's validation results, a whole document per row here).
        h("td", {}, num(c.faithfulness)),
        h("td", {}, [...c.aliases, ...c.tags.map((t) => `#${t}`)].join(" ")),
        h("td", {}, viewLink("evolution", { model: c.modelName, task: c.taskName, method: c.method }, "evolution")),
      ),
    );
    results.replaceChildren(
      rows.length
        ? h(
            "table",
            { id: "circuits-table" },
            h("thead", {}, h("tr", {}, ["", "id", "model", "task", "checkpoint", "method", "edges", "faithfulness", "aliases/tags", ""].map((x) => h("th", {}, x)))),
            h("tbody", {}, rows),
          )
        : h("p", {}, "No circuit matches."),
    );
    pager.replaceChildren(
      h("button", { id: "prev-page", disabled: page === 0, onclick: () => { page -= 1; load(); } }, "← previous"),
      ` page ${page + 1} `,
      h("button", { id: "next-page", disabled: !conn.pageInfo.hasNextPage, onclick: () => { page += 1; load(); } }, "next →"),
    );
  };

  const form = h(
    "form",
    {
      class: "filters",
      id: "browse-form",
      onsubmit: (e) => {
        e.preventDefault();
        cursors.length = 1;
        page = 0;
        load();
      },
    },
    FIELDS.map((f) => h("label", {}, f, " ", inputs[f])),
    h("button", { type: "submit" }, "Search"),
  );
  root.append(h("h2", {}, "Browse circuits"), form, actions, results, pager);
  refreshActions();
  await load();
}
