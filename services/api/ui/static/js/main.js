// The viewer's shell: hash routing (#view?param=...), the token box, export buttons, and the
// "ready"/"error" state on <main> that tests and users can wait on.
import { getToken, setToken } from "./api.js";
import { h, showError } from "./dom.js";
import { exportPng, exportSvg } from "./graph.js";
import * as browse from "./views/browse.js";
import * as circuit from "./views/circuit.js";
import * as compare from "./views/compare.js";
import * as evolution from "./views/evolution.js";
import * as jobs from "./views/jobs.js";
import * as shared from "./views/shared.js";

const VIEWS = { browse, circuit, compare, shared, evolution, jobs };
const main = document.getElementById("view");
const exportBox = document.getElementById("export");
let leaving = [];
let current = { cy: null, name: "" };

const app = {
  go(view, params = {}) {
    location.hash = `${view}?${new URLSearchParams(params)}`;
  },
  setGraph(cy, name) {
    current = { cy, name };
    window.circuitViewer = { cy }; // for the browser tests and the devtools console
    exportBox.hidden = false;
  },
  onLeave(fn) {
    leaving.push(fn);
  },
  error(err) {
    main.dataset.state = "error";
    main.prepend(h("p", { class: "error", role: "alert" }, String(err.message || err)));
  },
};

async function route() {
  for (const fn of leaving) fn();
  leaving = [];
  if (current.cy) current.cy.destroy();
  current = { cy: null, name: "" };
  window.circuitViewer = null;
  exportBox.hidden = true;
  const [name, query] = (location.hash.slice(1) || "browse").split("?");
  const view = VIEWS[name] || browse;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.getAttribute("href") === `#${name}`);
  }
  main.dataset.state = "loading";
  main.dataset.view = name;
  main.dataset.route = location.hash; // lets a waiter tell this route's state from the last one
  const root = h("section", {});
  main.replaceChildren(root);
  try {
    await view.render(root, new URLSearchParams(query || ""), app);
    main.dataset.state = "ready";
  } catch (err) {
    showError(root.appendChild(h("div")), err);
    main.dataset.state = "error";
  }
}

const tokenInput = document.getElementById("token");
tokenInput.value = getToken();
document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setToken(tokenInput.value.trim());
  route();
});
document.getElementById("export-png").addEventListener("click", () => exportPng(current.cy, current.name));
document.getElementById("export-svg").addEventListener("click", () => exportSvg(current.cy, current.name));
window.addEventListener("hashchange", route);
route();
