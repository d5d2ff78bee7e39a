// Jobs: the queue (newest first, refreshed by polling while the view is open), one job's live
// progress (subscription, else polling) and event log, and the discovery submission form.
import { getToken, gql } from "../api.js";
import { h, viewLink } from "../dom.js";
import { followJob } from "../live.js";

const JOBS = `query Jobs($status: JobState, $first: Int!, $after: String) {
  jobs(status: $status, first: $first, after: $after) { pageInfo { hasNextPage endCursor }
    nodes { id kind status progress message model task method circuitId createdAt } } }`;
const JOB = `query Job($id: ID!) { job(id: $id) { id kind status progress message error model task
  method params ablation metric circuitId attempts maxAttempts createdAt startedAt finishedAt
  events { at event message } } }`;
const SUBMIT = `mutation Submit($input: DiscoveryInput!) { submitDiscovery(input: $input) { id status } }`;

function progressBar(job) {
  return h("progress", { max: 1, value: job.progress, title: `${Math.round(job.progress * 100)}%` });
}

function submitForm(app) {
  const field = (name, value = "", attrs = {}) => h("input", { id: `submit-${name}`, name, value, ...attrs });
  const inputs = {
    model: field("model", "", { required: true }),
    task: field("task", "", { required: true }),
    method: field("method", "eap_ig", { required: true }),
    ablation: field("ablation", "resample"),
    metric: field("metric", "logit_diff"),
    priority: field("priority", "0", { type: "number" }),
  };
  const params = h("textarea", { id: "submit-params", rows: 2, placeholder: '{"steps": 8}' });
  const outcome = h("p", { id: "submit-outcome", role: "status" });
  const form = h(
    "form",
    {
      class: "filters",
      id: "submit-form",
      onsubmit: async (e) => {
        e.preventDefault();
        outcome.replaceChildren("submitting…");
        try {
          const input = { ...Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, v.value.trim()])) };
          input.priority = Number(input.priority || 0);
          if (params.value.trim()) {
            let parsed = null;
            try {
              parsed = JSON.parse(params.value);
            } catch {
              // reported below, like a parsed value that is not an object
            }
            if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
              throw new Error("params must be a JSON object");
            }
            input.params = parsed;
          }
          const job = (await gql(SUBMIT, { input })).submitDiscovery;
          outcome.replaceChildren("queued job ", viewLink("jobs", { id: job.id }, job.id));
        } catch (err) {
          outcome.replaceChildren(h("span", { class: "error" }, String(err.message)));
        }
      },
    },
    Object.entries(inputs).map(([k, v]) => h("label", {}, k, " ", v)),
    h("label", {}, "params (JSON) ", params),
    h("button", { type: "submit", disabled: !getToken() }, "Submit discovery job"),
    getToken() ? null : h("span", { class: "small" }, " (enter a write token above to submit)"),
    outcome,
  );
  return h("div", { class: "panel" }, h("h3", {}, "Submit a discovery job"), form);
}

async function jobDetail(id, app) {
  const job = (await gql(JOB, { id })).job;
  if (!job) throw new Error(`no job ${id}`);
  const bar = progressBar(job);
  const status = h("strong", { id: "job-status" }, job.status);
  const message = h("span", {}, job.message || "");
  const how = h("span", { id: "job-live", class: "small" });
  const panel = h(
    "div",
    { class: "panel", id: "job-detail" },
    h("h3", {}, `Job ${job.id} (${job.kind})`),
    h("p", {}, status, " ", bar, " ", message, " ", how),
    h("p", { class: "small" }, `${job.model} · ${job.task} · ${job.method ?? ""} · attempt ${job.attempts}/${job.maxAttempts}`),
    job.circuitId ? h("p", {}, viewLink("circuit", { id: job.circuitId }, "open the circuit")) : null,
    job.error ? h("pre", { class: "error" }, job.error) : null,
    h("h4", {}, "Events"),
    h("ul", {}, job.events.map((ev) => h("li", { class: "small" }, `${ev.at} ${ev.event} ${ev.message ?? ""}`))),
  );
  app.onLeave(
    followJob(id, (update, via) => {
      status.textContent = update.status;
      bar.value = update.progress;
      message.textContent = update.message || "";
      how.textContent = `(live via ${via})`;
    }),
  );
  return panel;
}

export async function render(root, params, app) {
  const statusFilter = h(
    "select",
    { id: "jobs-status" },
    ["", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"].map((s) => h("option", { value: s, selected: params.get("status") === s }, s || "any")),
  );
  statusFilter.addEventListener("change", () => app.go("jobs", statusFilter.value ? { status: statusFilter.value } : {}));
  const list = h("div", { id: "jobs-list" });
  root.append(h("h2", {}, "Jobs"), h("p", {}, "status ", statusFilter, h("span", { class: "small" }, " · the list refreshes every 2 s")));
  if (params.get("id")) root.append(await jobDetail(params.get("id"), app));
  root.append(list, submitForm(app));
  let timer = null;
  let stopped = false;
  const refresh = async () => {
    if (stopped) return;
    const data = await gql(JOBS, { status: params.get("status") || null, first: 20, after: null });
    const rows = data.jobs.nodes.map((j) =>
      h(
        "tr",
        {},
        h("td", {}, viewLink("jobs", { id: j.id }, j.id)),
        h("td", {}, j.kind),
        h("td", {}, j.status),
        h("td", {}, progressBar(j)),
        h("td", {}, `${j.model} · ${j.task} · ${j.method ?? ""}`),
        h("td", {}, j.message ?? ""),
        h("td", {}, j.circuitId ? viewLink("circuit", { id: j.circuitId }, "circuit") : ""),
      ),
    );
    list.replaceChildren(
      rows.length
        ? h("table", { id: "jobs-table" }, h("thead", {}, h("tr", {}, ["id", "kind", "status", "progress", "what", "message", ""].map((x) => h("th", {}, x)))), h("tbody", {}, rows))
        : h("p", {}, "No jobs."),
    );
    if (!stopped) timer = setTimeout(() => refresh().catch((err) => app.error(err)), 2000);
  };
  app.onLeave(() => {
    stopped = true;
    clearTimeout(timer);
  });
  await refresh();
}
