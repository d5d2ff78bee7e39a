// A tiny element builder so views stay declarative without a framework.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function table(headers, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c ?? "—"))))),
  );
}

export function num(value, digits = 3) {
  return typeof value === "number" ? value.toFixed(digits) : "—";
}

// Faithfulness as stored: the value with the gap it was normalised by, or "undefined" (the
// reason on hover) where the clean-ablated gap is within noise and the ratio would mislead.
export function faithfulness(value, gap, undefinedReason, attrs = {}) {
  if (undefinedReason) {
    return h("span", { class: "undefined", title: undefinedReason, ...attrs }, "undefined");
  }
  const shown = typeof gap === "number" ? `${num(value)} (gap ${num(gap)})` : num(value);
  return h("span", attrs, shown);
}

export function showError(target, error) {
  target.replaceChildren(h("p", { class: "error", role: "alert" }, String(error.message || error)));
}

// A link to another view (hash routing keeps the page a single static file).
export function viewLink(view, params, text) {
  return h("a", { href: `#${view}?${new URLSearchParams(params)}` }, text);
}
