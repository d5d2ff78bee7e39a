// Canonical MIB names (schema/names.py): nodes input, a{L}.h{H}, m{L}, logits; edges
// src->dst, with <q>|<k>|<v> when the target is a head.
const HEAD = /^a(\d+)\.h(\d+)$/;
const MLP = /^m(\d+)$/;
const EDGE = /^(.+?)->(.+?)(?:<([qkv])>)?$/;

export function parseNode(name) {
  let m = HEAD.exec(name);
  if (m) return { name, kind: "ATTN_HEAD", layer: Number(m[1]), head: Number(m[2]) };
  m = MLP.exec(name);
  if (m) return { name, kind: "MLP", layer: Number(m[1]), head: null };
  if (name === "input") return { name, kind: "EMBED", layer: null, head: null };
  if (name === "logits") return { name, kind: "LOGITS", layer: null, head: null };
  return { name, kind: "FEATURE", layer: null, head: null };
}

export function parseEdge(name) {
  const m = EDGE.exec(name);
  if (!m) throw new Error(`not a canonical edge name: ${name}`);
  return { name, source: m[1], target: m[2], receiver: m[3] ? m[3].toUpperCase() : null };
}
