"""The residual stream of the engine's forward pass: its writer groups, their sum, and each
reader's input under edge interventions (``d_model``-wide, or already projected).

Kept apart from the layer loop in ``forward.py`` and its strategies (``strategies.py``, which
decide what each reader receives) because this is where the memory layout lives: see
``ResidualStream``.
"""

from __future__ import annotations

import torch

from circuitreg.workers.engine.blocks import at_positions, head_outputs
from circuitreg.workers.engine.groups import WriterGroup
from circuitreg.workers.engine.weights import EngineError


class ResidualStream:
    """The writers so far as groups (``WriterGroup``), each stored once, writer-major, so
    a later reader's intervention is a few matrix products over all of them.

    The stream itself is kept as the ``common`` part every set shares (the outputs of the
    shared groups and every bias) plus the outputs of the per-set groups. A reader's input is
    ``common + sum_w c_w row_w + sum_(per-set w) a_w output_w`` with ``a = 1 - c`` (exact)
    or 1 (fixed delta). Readers with no norm take it projected (``projected``), and the
    low-rank heads of attention-only models never form a ``d_model``-wide output except at
    the read positions (``read``); readers behind a norm, and every reader of a model whose
    per-set outputs are already formed (MLPs), take it formed ``d_model``-wide
    (``shifted``): the shared rows in one product, the per-set outputs in one more, read
    from a buffer that holds them side by side (``slot``).
    """

    def __init__(
        self,
        first: torch.Tensor,
        ablated: torch.Tensor | None,
        delta: torch.Tensor | None,
        track: bool,
        record: bool,
    ) -> None:
        self.ablated, self.delta, self.track, self.record = ablated, delta, track, record
        self.exact = delta is None  # patches bring the ablated outputs, not a fixed delta
        self.outputs: list[torch.Tensor] = []
        self.groups: list[WriterGroup] = []
        self.count = 0
        self.sets = 1
        self.narrowed = False  # True once cut to the read positions (``at``)
        self.common = torch.zeros_like(first)  # [1, N, T, d]
        # The per-set groups' outputs side by side, writer-major ``[W - lo, S, N, T, d]``
        # from writer ``lo``, filled up to writer ``hi`` (``_buffered``), so a reader mixes
        # all of them in one product (see ``shifted``).
        self._buffer: torch.Tensor | None = None
        self._buffered = (0, 0)
        self.add(first.unsqueeze(0))

    # -- adding writers -------------------------------------------------------------------

    def add(self, outputs: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Append a group of writer outputs ``[g, S, N, T, d]``."""
        lo, hi = self.count, self.count + outputs.shape[0]
        if self.record:
            self.outputs.append(outputs)
        shared = outputs.shape[1] == 1 or outputs.stride(1) == 0
        if self.track:
            row = self._row(lo, hi)
            if shared and self.exact:
                self.groups.append(WriterGroup(lo, hi, (row - outputs[:, 0]).contiguous()))
            elif shared:
                self.groups.append(WriterGroup(lo, hi, row))
            else:
                outputs = self._buffered_outputs(outputs, lo, hi)
                self.groups.append(WriterGroup(lo, hi, row, outputs=outputs))
        if shared or not self.track:
            # A one-writer group (an MLP, the input) needs no reduction: a sum would
            # zero-fill and copy a buffer the size of the stream.
            one = outputs[:, :1]
            self.common = self.common + (one[0] if one.shape[0] == 1 else one.sum(0))
        self._added(hi, bias)

    def add_heads(
        self, z: torch.Tensor, w_o: torch.Tensor, bias: torch.Tensor, form_outputs: bool
    ) -> None:
        """Append a layer's heads from their ``z`` ``[g, S, N, T, d_head]`` (heads first, as
        attention gives them) and ``w_o`` ``[g, d_head, d]``.

        Heads that differ per set keep their ``z``, which readers with no norm project
        through ``W_O W_Q`` etc. Their ``d_model``-wide outputs are formed at once with
        ``form_outputs`` (an MLP follows), else only if a reader needs them (the induction
        toy: only the logits, at the read positions)."""
        g, s, n, t, d_head = z.shape
        outputs = None
        if form_outputs or s == 1 or self.record or not self.track:
            outputs = head_outputs(z, w_o)
            if s == 1 or self.record or not self.track:
                self.add(outputs, bias)
                return
        lo, hi = self.count, self.count + g
        by_position = z.permute(1, 2, 3, 0, 4).reshape(s, n, t, g * d_head)
        self.groups.append(
            WriterGroup(lo, hi, self._row(lo, hi), z=by_position, w_o=w_o, outputs=outputs)
        )
        self._added(hi, bias)

    def _buffered_outputs(self, outputs: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """A per-set group's outputs in the stream's buffer where they extend it (a view into
        it is returned; no copy if they were computed there, ``slot``), else as they are."""
        view = self.slot(lo, hi, tuple(outputs.shape), outputs)
        if view is None:
            return outputs
        if view.data_ptr() != outputs.data_ptr():
            view.copy_(outputs)
        self._buffered = (self._buffered[0], hi)
        return view

    def slot(
        self, lo: int, hi: int, shape: tuple[int, ...], like: torch.Tensor
    ) -> torch.Tensor | None:
        """Where per-set outputs ``shape`` ``[g, S, N, T, d]`` of writers ``lo:hi``, computed
        from ``like`` (its dtype and device), go in the buffer (allocated at the first), or
        None where they cannot: they do not extend it, they are one set, or autograd records
        them (each write into the buffer would count as an in-place change of the slices
        that earlier products saved)."""
        if not self.track or shape[1] == 1 or like.requires_grad:
            return None
        if self._buffer is None:
            source = self.ablated if self.exact else self.delta
            if source is None:
                return None
            self._buffer = like.new_empty(source.shape[-2] - lo, *shape[1:])
            self._buffered = (lo, lo)
        start, stop = self._buffered
        if stop != lo or tuple(self._buffer.shape[1:]) != tuple(shape[1:]):
            return None
        return self._buffer[lo - start : hi - start]

    def _added(self, count: int, bias: torch.Tensor | None) -> None:
        self.count = count
        if bias is not None:
            self.common = self.common + bias

    def _row(self, lo: int, hi: int) -> torch.Tensor:
        """What a patch brings for writers ``lo:hi`` (ablated outputs or the fixed delta),
        ``[g, N|1, T, d]``."""
        source = self.ablated if self.exact else self.delta
        if source is None:
            raise EngineError("patching needs the ablated writer outputs or a fixed delta")
        return source[..., lo:hi, :].permute(2, 0, 1, 3)

    def expand(self, n_sets: int) -> None:
        """Widen a single-set stream to ``n_sets`` identical sets (views, no copies); its
        groups are all shared, so they keep no sets axis."""
        self.sets = n_sets
        self.outputs = [o.expand(o.shape[0], n_sets, *o.shape[2:]) for o in self.outputs]

    # -- reading --------------------------------------------------------------------------

    @property
    def resid(self) -> torch.Tensor:
        """The stream ``[S, N, T, d]`` of a run without patches: every writer is then in the
        common part (only a tracked stream keeps per-set groups, and its readers take
        ``read``, ``shifted`` or ``projected``)."""
        if self.track:
            raise EngineError("a patched stream's readers take read, shifted or projected")
        return self.common.expand(self.sets, *self.common.shape[1:])

    def read(self, coeff: torch.Tensor, k: int) -> torch.Tensor:
        """One reader's input (an MLP, the logits) per set, ``coeff [S, k]`` -> ``[S, N, T, d]``:
        ``common + sum_w c_w row_w + sum_(per-set w) a_w output_w``.

        Where every per-set group is already ``d_model``-wide (a model with MLPs or norms)
        this is ``shifted`` for one receiver, which reads them from the buffer in one
        product; here, heads still low rank (an attention-only model's logits) are summed
        through ``W_O`` without forming their outputs."""
        groups = self._groups_before(k)
        if all(g.outputs is not None for g in groups if g.per_set):
            return self.shifted(coeff.unsqueeze(1), k)[0]
        _, n, t, d = self.common.shape
        out = torch.mm(_with_ones(coeff), self._shared_rows(groups))  # [S, N*T*d]
        for group in groups:
            if not group.per_set:
                continue
            weight = self._own_weight(coeff[:, group.lo : group.hi])  # [S, g]
            out += group.weighted_sum(weight).view(out.shape)
        return out.view(-1, n, t, d)

    def _own_weight(self, c: torch.Tensor) -> torch.Tensor:
        """What a per-set writer's own output is weighted by in its reader: ``1 - c`` when the
        patch replaces it (exact), 1 when a fixed delta is added to it."""
        return 1.0 - c if self.exact else torch.ones_like(c)

    def shifted(self, coeff: torch.Tensor, k: int) -> torch.Tensor:
        """Every receiver's ``d_model``-wide input (for receivers behind a norm):
        ``coeff [S, *R, k]`` (``R``: the receiver dims, e.g. ``(3, H)`` for a layer's q/k/v
        inputs) -> ``[*R, S, N, T, d]``,
        ``common + sum_w c_w row_w + sum_(per-set w) a_w output_w`` over writers ``0:k``.

        What every set shares (the common part with weight 1, each writer's row) is one
        matrix product for all sets and receivers, written straight into the result; each
        per-set group then adds its outputs, weighted per set and receiver, in place. These
        passes are bound by memory traffic: the stream copied into a buffer first and a
        per-set difference (ablated minus output) formed for every group would each cost a
        pass over the largest tensors.
        """
        s, receivers = coeff.shape[0], tuple(coeff.shape[1:-1])
        _, n, t, d = self.common.shape
        r = 1
        for size in receivers:
            r *= size
        groups = self._groups_before(k)
        by_set = coeff.reshape(s, r, k)
        mix = _with_ones(by_set).transpose(0, 1).reshape(r * s, 1 + k)
        out = torch.mm(mix, self._shared_rows(groups))  # [R*S, N*T*d]
        by_set_view = out.view(r, s, n * t * d).transpose(0, 1)  # [S, R, N*T*d], a view
        per_set = [group for group in groups if group.per_set]
        for outputs, lo, hi in self._per_set_runs(per_set, several_readers=r > 1):
            weight = self._own_weight(by_set[..., lo:hi])  # [S, R, g]
            by_set_view.baddbmm_(weight, outputs.view(hi - lo, s, n * t * d).transpose(0, 1))
        return out.view(*receivers, s, n, t, d)

    def _per_set_runs(
        self, per_set: list[WriterGroup], several_readers: bool
    ) -> list[tuple[torch.Tensor, int, int]]:
        """The per-set groups' outputs ``[g, S, N, T, d]`` with their writers ``lo:hi``, in as
        few runs as pays: one from the buffer where it holds exactly these groups; one
        concatenated for several readers (each run is a pass over all their inputs, the
        concatenation one over the outputs); else one per group."""
        if not per_set:
            return []
        lo, hi = per_set[0].lo, per_set[-1].hi
        contiguous = sum(group.hi - group.lo for group in per_set) == hi - lo
        if self._buffer is not None and self._buffered == (lo, hi) and contiguous:
            return [(self._buffer[: hi - lo], lo, hi)]
        if several_readers and len(per_set) > 1 and contiguous:
            return [(torch.cat([group.full_outputs() for group in per_set]), lo, hi)]
        return [(group.full_outputs(), group.lo, group.hi) for group in per_set]

    def projected(
        self, weight: torch.Tensor, bias: torch.Tensor, coeff: torch.Tensor, k: int
    ) -> torch.Tensor:
        """Every receiver's input already through a linear map, for receivers with no norm
        before them: ``weight [*R, d, e]`` and ``bias [*R, e]`` per receiver,
        ``coeff [S, *R, k]``; returns ``[*R, S, N, T, e]``.

        The common part and every writer's row (the same for all sets) are projected once
        and mixed ``e``-wide; a per-set group, ``left @ right``, enters as
        ``left @ (a right W)``, its weights ``a`` folded into the small matrix ``right W``
        (``W_O W_Q`` etc. for heads: ``d_head`` square). No set or receiver forms a
        ``d_model``-wide input, otherwise the largest tensor of a pass.
        """
        s, receivers = coeff.shape[0], tuple(coeff.shape[1:-1])
        _, n, t, d = self.common.shape
        e = weight.shape[-1]
        flat_weight = weight.reshape(-1, d, e)  # [R, d, e]
        r = flat_weight.shape[0]
        w_all = flat_weight.permute(1, 0, 2).reshape(d, r * e)
        by_set = coeff.reshape(s, r, k)
        groups = self._groups_before(k)
        rows = self._shared_rows(groups).view(1 + k, n * t, d)
        # [R, 1 + k, N*T, e]: one product for all receivers and every shared row
        projected_rows = torch.einsum("wmd,rde->rwme", rows, flat_weight)
        projected_rows[:, 0] += bias.reshape(r, 1, e)
        mix = _with_ones(by_set).transpose(0, 1)
        out = torch.bmm(mix, projected_rows.reshape(r, 1 + k, n * t * e))  # [R, S, N*T*e]
        per_set: torch.Tensor | None = None  # [S, N*T, R*e]
        for group in groups:
            if group.per_set:
                weight_of = self._own_weight(by_set[..., group.lo : group.hi])  # [S, R, g]
                term = group.projected(weight_of, w_all)
                per_set = term if per_set is None else per_set + term
        if per_set is not None:  # each set's own outputs, laid out receiver-first
            out.view(r, s, n * t, e).add_(per_set.view(s, n * t, r, e).permute(2, 0, 1, 3))
        return out.view(*receivers, s, n, t, e)

    def _shared_rows(self, groups: list[WriterGroup]) -> torch.Tensor:
        """What every set shares, ``[1 + k, N*T*d]``: the common part (its coefficient is
        always 1, ``_with_ones``), then each writer's row."""
        _, n, t, d = self.common.shape
        rows = [self.common.expand(1, n, t, d)] + [g.row.expand(-1, n, t, d) for g in groups]
        return torch.cat(rows).view(-1, n * t * d)

    def _groups_before(self, k: int) -> list[WriterGroup]:
        """The groups of writers ``0:k``, which must be every group so far: the common part
        and the stream hold all of them, so a reader is read before later writers are
        added."""
        if k != self.count:
            raise EngineError(f"a reader of writers 0:{k} read after {self.count} writers")
        return self.groups

    # -- layout ---------------------------------------------------------------------------

    def stacked(self) -> torch.Tensor:
        """All recorded writer outputs ``[S, N, T, W, d]``."""
        return torch.cat(self.outputs, dim=0).permute(1, 2, 3, 0, 4).contiguous()

    def at(self, positions: torch.Tensor, adds_follow: bool = True) -> ResidualStream:
        """This stream narrowed to each example's ``positions [N, P]`` (copies, not views):
        from there on the pass computes only what the read positions need. Without
        ``adds_follow`` (only the logits are read from it) the ablated outputs, which only
        later groups need, are not narrowed."""
        narrow = ResidualStream.__new__(ResidualStream)
        narrow.ablated = narrow.delta = None
        if adds_follow and self.ablated is not None:
            narrow.ablated = at_positions(self.ablated, 0, positions)
        if adds_follow and self.delta is not None:
            narrow.delta = at_positions(self.delta, 0, positions)
        narrow.exact, narrow.track, narrow.record = self.exact, self.track, False
        narrow.outputs, narrow.count, narrow.sets = [], self.count, self.sets
        narrow.common = at_positions(self.common, 1, positions)
        narrow.groups = [group.narrowed(positions) for group in self.groups]
        narrow._buffer, narrow._buffered = None, (0, 0)
        narrow.narrowed = True
        return narrow


def _with_ones(coeff: torch.Tensor) -> torch.Tensor:
    """``coeff [..., k]`` with a leading 1 per row, ``[..., 1 + k]``: the weight of the common
    part in ``_shared_rows``."""
    return torch.cat([torch.ones_like(coeff[..., :1]), coeff], -1)
