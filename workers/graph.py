"""The computational graph of a transformer, in MIB / EAP-IG form.

Nodes are the writers and readers of the residual stream: ``input`` (token + position
embeddings), every attention head ``a{L}.h{H}``, every MLP ``m{L}`` and ``logits``. An edge
goes from every writer to every later reader; a head reads through three separate inputs
(query, key, value), so each head receives three edges from each earlier writer. With these
rules GPT-2 small has 158 nodes and 32,491 edges, exactly the graph MIB publishes.

The order of ``edges`` is fixed (grouped by receiver in topological order, then by writer), so
a score tensor ``[n_edges]`` is meaningful on its own and the intervention engine can slice
the edges that enter one layer's receivers as a contiguous block.

Positional edges. With ``positions=T`` every edge exists once per token position: the
positional edge ``(w -> r at t)`` is writer ``w``'s output at position ``t`` into reader
``r``'s input at position ``t``. The residual stream only carries information along a
position, so these same-position edges are all there are into MLPs, the logits and the
q/k/v inputs; attention's movement across positions stays inside the head (a head's output
at ``t`` reads its key and value inputs at positions up to ``t``), as in TransformerLens's
``attribution_patch`` and ACDC. Positional scores are a tensor ``[n_edges, T]``, edge-major
and position-minor: edge ``e`` at position ``t`` is index ``e * T + t`` of the flattened
tensor, so summing over the last dimension gives the unpositioned ``[n_edges]`` scores and
GPT-2 small on 16 tokens has 32,491 x 16 = 519,856 positional edges.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from circuitreg.schema.names import (
    INPUT,
    LOGITS,
    Receiver,
    edge_name,
    head_name,
    mlp_name,
)


class GraphError(ValueError):
    """A graph built from an unsupported configuration, or a bad node or edge name."""


@dataclass(frozen=True, slots=True)
class ReceiverSlot:
    """One input of a reading node: a head's q, k or v input, an MLP input or the logits.

    ``writers`` are indices into ``ComputationalGraph.writers`` of every node that writes
    before this input reads; ``edge_start`` is where this slot's edges begin in ``edges``
    (its edges are ``edge_start .. edge_start + len(writers)``, in writer order).
    """

    node: str
    receiver: Receiver | None
    layer: int | None
    head: int | None
    writers: tuple[int, ...]
    edge_start: int

    @property
    def edge_stop(self) -> int:
        """One past this slot's last edge."""
        return self.edge_start + len(self.writers)


@dataclass(frozen=True)
class ComputationalGraph:
    """Nodes and edges of a transformer's residual-stream graph.

    Build it with ``from_model`` (a TransformerBridge or anything with a TransformerLens-like
    ``cfg``), ``from_cfg`` or directly from the shape. ``positions`` is the prompt length of a
    position-resolved analysis: with it the graph also has ``n_positional_edges`` (every edge
    once per position, see the module docstring) indexed by ``positional_index``. Names never
    carry positions (``circuitreg.schema.names``): a positional edge is a name and an index.
    """

    n_layers: int
    n_heads: int
    attn_only: bool = False
    parallel_attn_mlp: bool = False
    positions: int | None = None
    _edge_lookup: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.n_heads < 1:
            raise GraphError(
                f"a graph needs n_layers >= 1 and n_heads >= 1, got {self.n_layers}, {self.n_heads}"
            )
        if self.positions is not None and self.positions < 1:
            raise GraphError(f"positions must be >= 1 when given, got {self.positions}")
        object.__setattr__(self, "_edge_lookup", {n: i for i, n in enumerate(self.edges)})

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_cfg(cls, cfg: Any, positions: int | None = None) -> ComputationalGraph:
        """From a TransformerLens config (``n_layers``, ``n_heads``, ``attn_only``, ...)."""
        try:
            n_layers, n_heads = int(cfg.n_layers), int(cfg.n_heads)
        except AttributeError as exc:
            raise GraphError(f"config lacks n_layers/n_heads: {exc}") from exc
        return cls(
            n_layers=n_layers,
            n_heads=n_heads,
            attn_only=bool(getattr(cfg, "attn_only", False)),
            parallel_attn_mlp=bool(getattr(cfg, "parallel_attn_mlp", False)),
            positions=positions,
        )

    @classmethod
    def from_model(cls, model: Any, positions: int | None = None) -> ComputationalGraph:
        """From a model carrying a TransformerLens ``cfg`` (TransformerBridge, tracr, ...)."""
        cfg = getattr(model, "cfg", None)
        if cfg is None:
            raise GraphError(f"{type(model).__name__} has no .cfg to build a graph from")
        return cls.from_cfg(cfg, positions=positions)

    # -- nodes --------------------------------------------------------------------------

    @cached_property
    def writers(self) -> tuple[str, ...]:
        """Nodes that write to the residual stream, in topological order (no ``logits``)."""
        out = [INPUT]
        for layer in range(self.n_layers):
            out.extend(head_name(layer, h) for h in range(self.n_heads))
            if not self.attn_only:
                out.append(mlp_name(layer))
        return tuple(out)

    @cached_property
    def nodes(self) -> tuple[str, ...]:
        """All nodes in topological order: input, per layer heads then MLP, logits."""
        return (*self.writers, LOGITS)

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return len(self.nodes)

    @cached_property
    def _node_lookup(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.nodes)}

    def node_index(self, name: str) -> int:
        """Index of a node in ``nodes``; ``GraphError`` names an unknown node."""
        try:
            return self._node_lookup[name]
        except KeyError:
            raise GraphError(f"node {name!r} is not in this graph ({self.describe()})") from None

    def writer_index(self, layer: int, head: int | None = None) -> int:
        """Index in ``writers`` of head ``a{layer}.h{head}`` or, with no head, MLP ``m{layer}``."""
        block = self.n_heads + (0 if self.attn_only else 1)
        if head is None:
            if self.attn_only:
                raise GraphError("attention-only graph has no MLP writers")
            return 1 + layer * block + self.n_heads
        return 1 + layer * block + head

    # -- receivers and edges ------------------------------------------------------------

    def _writers_before(self, layer: int, include_heads_of_layer: bool) -> tuple[int, ...]:
        """Writer indices visible to a reader in ``layer``."""
        out = [0]
        for lyr in range(layer + 1):
            if lyr < layer or include_heads_of_layer:
                out.extend(self.writer_index(lyr, h) for h in range(self.n_heads))
            if lyr < layer and not self.attn_only:
                out.append(self.writer_index(lyr))
        return tuple(out)

    @cached_property
    def slots(self) -> tuple[ReceiverSlot, ...]:
        """Every reading input in topological order (per layer: q, k, v of each head, MLP)."""
        slots: list[ReceiverSlot] = []
        start = 0
        for layer in range(self.n_layers):
            head_writers = self._writers_before(layer, include_heads_of_layer=False)
            for recv in (Receiver.Q, Receiver.K, Receiver.V):
                for h in range(self.n_heads):
                    slots.append(
                        ReceiverSlot(head_name(layer, h), recv, layer, h, head_writers, start)
                    )
                    start += len(head_writers)
            if not self.attn_only:
                mlp_writers = self._writers_before(
                    layer, include_heads_of_layer=not self.parallel_attn_mlp
                )
                slots.append(ReceiverSlot(mlp_name(layer), None, layer, None, mlp_writers, start))
                start += len(mlp_writers)
        all_writers = tuple(range(len(self.writers)))
        slots.append(ReceiverSlot(LOGITS, None, None, None, all_writers, start))
        return tuple(slots)

    @cached_property
    def edges(self) -> tuple[str, ...]:
        """Canonical edge names, in the fixed order of ``slots`` then writers."""
        return tuple(
            edge_name(self.writers[w], slot.node, slot.receiver)
            for slot in self.slots
            for w in slot.writers
        )

    @property
    def n_edges(self) -> int:
        """Number of edges."""
        return len(self.edges)

    @property
    def n_positional_edges(self) -> int:
        """Every edge once per position: ``n_edges * positions`` (needs ``positions``)."""
        return self.n_edges * self._positions()

    def positional_index(self, edge: int | str, position: int) -> int:
        """Index of edge ``edge`` (index or name) at ``position`` in flattened positional
        scores: ``e * T + t``, edge-major and position-minor like ``[n_edges, T]``."""
        t = self._positions()
        e = self.edge_index(edge) if isinstance(edge, str) else edge
        if not 0 <= e < self.n_edges or not 0 <= position < t:
            raise GraphError(f"no positional edge ({e}, {position}) in {self.describe()}")
        return e * t + position

    def positional_edge(self, index: int) -> tuple[str, int]:
        """The edge name and position of a flattened positional index (``positional_index``'s
        inverse), for reading a ranking of positional scores."""
        if not 0 <= index < self.n_positional_edges:
            raise GraphError(f"no positional edge {index} in {self.describe()}")
        e, position = divmod(index, self._positions())
        return self.edges[e], position

    def check_positional_scores(self, values: torch.Tensor) -> None:
        """Raise ``GraphError`` unless ``values`` is ``[..., n_edges, positions]``."""
        t = self._positions()
        if values.ndim < 2 or tuple(values.shape[-2:]) != (self.n_edges, t):
            raise GraphError(
                f"expected positional scores ending in ({self.n_edges}, {t}), "
                f"got shape {tuple(values.shape)}"
            )

    def _positions(self) -> int:
        if self.positions is None:
            raise GraphError(f"this graph has no positions ({self.describe()})")
        return self.positions

    def edge_index(self, name: str) -> int:
        """Index of an edge in ``edges``; ``GraphError`` names an unknown edge."""
        try:
            return self._edge_lookup[name]
        except KeyError:
            raise GraphError(f"edge {name!r} is not in this graph ({self.describe()})") from None

    def edge_indices(self, names: Iterable[str]) -> torch.Tensor:
        """Indices of several edges, as a long tensor."""
        return torch.tensor([self.edge_index(n) for n in names], dtype=torch.long)

    @cached_property
    def edge_source(self) -> torch.Tensor:
        """For every edge, the index in ``nodes`` of its source (long ``[n_edges]``)."""
        return torch.tensor([w for slot in self.slots for w in slot.writers], dtype=torch.long)

    @cached_property
    def edge_target(self) -> torch.Tensor:
        """For every edge, the index in ``nodes`` of its target (long ``[n_edges]``)."""
        return torch.tensor(
            [self.node_index(slot.node) for slot in self.slots for _ in slot.writers],
            dtype=torch.long,
        )

    def mask_from_edges(self, names: Iterable[str]) -> torch.Tensor:
        """A boolean ``[n_edges]`` mask that is True on the named edges."""
        mask = torch.zeros(self.n_edges, dtype=torch.bool)
        mask[self.edge_indices(list(names))] = True
        return mask

    def edges_from_mask(self, mask: torch.Tensor) -> list[str]:
        """Names of the edges where a ``[n_edges]`` mask is True."""
        self.check_edge_vector(mask)
        return [self.edges[i] for i in torch.nonzero(mask.bool().cpu()).flatten().tolist()]

    def outgoing_edges(self, node: str) -> torch.Tensor:
        """Indices of the edges leaving ``node`` (patching a node patches all of them)."""
        return torch.nonzero(self.edge_source == self.node_index(node)).flatten()

    def node_mask_to_edge_mask(self, node_mask: torch.Tensor) -> torch.Tensor:
        """Edge mask ``[..., n_edges]`` that is True on every edge leaving a True node."""
        if node_mask.shape[-1] != self.n_nodes:
            raise GraphError(
                f"node mask has {node_mask.shape[-1]} entries, graph has {self.n_nodes}"
            )
        return node_mask.bool()[..., self.edge_source.to(node_mask.device)]

    def check_edge_vector(self, values: torch.Tensor) -> None:
        """Raise ``GraphError`` unless the last dimension is ``n_edges``."""
        if values.ndim == 0 or values.shape[-1] != self.n_edges:
            raise GraphError(
                f"expected a tensor ending in {self.n_edges} edges, got shape {tuple(values.shape)}"
            )

    # -- reachability -------------------------------------------------------------------

    def prune_dangling(self, mask: torch.Tensor) -> torch.Tensor:
        """Keep only the True edges that lie on some ``input -> logits`` path of True edges.

        A head counts as reached if any of its q/k/v inputs is reached, and as useful if any
        edge leaving it is useful, as in MIB's and EAP-IG's pruning.
        """
        self.check_edge_vector(mask)
        keep = mask.bool().cpu()
        src, dst = self.edge_source.tolist(), self.edge_target.tolist()
        active = keep.nonzero().flatten().tolist()
        forward = self._reach(active, src, dst, start=self.node_index(INPUT))
        backward = self._reach(active, dst, src, start=self.node_index(LOGITS))
        pruned = torch.zeros_like(keep)
        for i in active:
            if src[i] in forward and dst[i] in backward:
                pruned[i] = True
        return pruned.to(mask.device)

    @staticmethod
    def _reach(
        active: Sequence[int], frm: Sequence[int], to: Sequence[int], start: int
    ) -> set[int]:
        adjacency: dict[int, list[int]] = {}
        for i in active:
            adjacency.setdefault(frm[i], []).append(to[i])
        seen, stack = {start}, [start]
        while stack:
            for nxt in adjacency.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    def nodes_in(self, edge_mask: torch.Tensor) -> list[str]:
        """Nodes touched by the True edges of a mask, in topological order."""
        self.check_edge_vector(edge_mask)
        idx = edge_mask.bool().cpu()
        touched = set(self.edge_source[idx].tolist()) | set(self.edge_target[idx].tolist())
        return [n for i, n in enumerate(self.nodes) if i in touched]

    def describe(self) -> str:
        """One line: the shape of the graph."""
        kind = "attn-only" if self.attn_only else "attn+mlp"
        if self.parallel_attn_mlp:
            kind += ", parallel"
        at = "" if self.positions is None else f" at {self.positions} positions"
        return (
            f"{self.n_layers} layers x {self.n_heads} heads, {kind}: "
            f"{self.n_nodes} nodes, {self.n_edges} edges{at}"
        )
