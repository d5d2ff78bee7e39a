// Copies the pinned browser builds out of node_modules into static/vendor/, which is committed
// so the API serves the viewer without node at run time. Run: npm ci && npm run build
import { copyFileSync, mkdirSync } from "node:fs";

const files = [
  ["node_modules/cytoscape/dist/cytoscape.min.js", "static/vendor/cytoscape.min.js"],
  ["node_modules/cytoscape-svg/cytoscape-svg.js", "static/vendor/cytoscape-svg.js"],
  ["node_modules/cytoscape/LICENSE", "static/vendor/cytoscape.LICENSE"],
  ["node_modules/cytoscape-svg/LICENSE", "static/vendor/cytoscape-svg.LICENSE"],
];
mkdirSync("static/vendor", { recursive: true });
for (const [from, to] of files) {
  copyFileSync(from, to);
  console.log(`${from} -> ${to}`);
}
