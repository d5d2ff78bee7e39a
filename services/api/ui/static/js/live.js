// Live job updates: the jobProgress subscription over graphql-transport-ws, falling back to
// polling job(id) when the socket cannot be used (e.g. the API needs a token: browsers cannot
// put an Authorization header on a WebSocket, so only anonymous-read deployments stream).
import { gql } from "./api.js";

const FIELDS = "id kind status progress message error circuitId updatedAt";
const FINISHED = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);

function subscribe(id, onJob, onFail) {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;
  const ws = new WebSocket(url, "graphql-transport-ws");
  let streamed = false;
  let done = false;
  ws.onopen = () => ws.send(JSON.stringify({ type: "connection_init", payload: {} }));
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "connection_ack") {
      ws.send(JSON.stringify({
        id: "1",
        type: "subscribe",
        payload: { query: `subscription P($id: ID!) { jobProgress(id: $id) { ${FIELDS} } }`, variables: { id } },
      }));
    } else if (msg.type === "next" && msg.payload.data) {
      streamed = true;
      onJob(msg.payload.data.jobProgress, "subscription");
    } else if (msg.type === "error" || (msg.type === "next" && msg.payload.errors)) {
      done = true;
      ws.close();
      onFail();
    } else if (msg.type === "complete") {
      done = true;
      ws.close();
    }
  };
  ws.onclose = () => {
    if (!done && !streamed) onFail();
  };
  return () => {
    done = true;
    ws.close();
  };
}

function poll(id, onJob) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    let job;
    try {
      job = (await gql(`query J($id: ID!) { job(id: $id) { ${FIELDS} } }`, { id })).job;
    } catch (err) {
      console.warn(`polling job ${id}: ${err.message}; retrying`);
    }
    if (stopped || job === null) return;
    if (job) onJob(job, "polling");
    if (!job || !FINISHED.has(job.status)) timer = setTimeout(tick, 1500);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// Calls onJob(job, how) on each update until the job finishes; returns a function that stops.
export function followJob(id, onJob) {
  let stop = () => {};
  stop = subscribe(id, onJob, () => {
    stop = poll(id, onJob);
  });
  return () => stop();
}
