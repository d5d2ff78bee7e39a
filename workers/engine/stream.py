"""The residual stream of the engine's forward pass: writer outputs, their sum, and the
per-group differences that edge interventions add to each reader's input.

Kept apart from the layer loop in ``forward.py`` (which decides what each reader receives)
because this is where the memory layout lives: see ``ResidualStream``.
"""

from __future__ import annotations

import torch

from circuitreg.workers.engine.blocks import at_positions
from circuitreg.workers.engine.weights import EngineError


class ResidualStream:
    """Writer outputs so far, their running sum, and each group's patch difference.

    A group is the writers produced together (the input, a layer's heads, an MLP). When it is
    added, its difference ``ablated - output`` (exact) or its fixed ``delta`` is stored once,
    writer-major (``[g, S, N, T, d]``), so every later reader's intervention is one matrix
    product per group and nothing is concatenated or copied again.
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
        self.outputs: list[torch.Tensor] = []
        self.diffs: list[tuple[int, int, torch.Tensor]] = []
        self.count = 0
        self.narrowed = False  # True once cut to the read positions (``at``)
        self.resid = torch.zeros_like(first)
        self.add(first.unsqueeze(0))

    def add(self, outputs: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Append a group of writer outputs ``[g, S, N, T, d]``."""
        lo, hi = self.count, self.count + outputs.shape[0]
        if self.record:
            self.outputs.append(outputs)
        if self.track:
            if self.delta is not None:  # fixed: [g, N|1, T, d], shared by every set
                diff = self.delta[..., lo:hi, :].permute(2, 0, 1, 3)
            elif self.ablated is not None:  # exact: [g, S, N, T, d]
                diff = self.ablated[..., lo:hi, :].permute(2, 0, 1, 3).unsqueeze(1) - outputs
            else:
                raise EngineError("patching needs the ablated writer outputs or a fixed delta")
            self.diffs.append((lo, hi, diff.contiguous()))
        self.count = hi
        # A one-writer group (an MLP, a one-head layer) needs no reduction: a sum would
        # zero-fill and copy a buffer the size of the stream.
        total = outputs[0] if outputs.shape[0] == 1 else outputs.sum(0)
        self.resid = self.resid + total
        if bias is not None:
            self.resid = self.resid + bias

    def shifted(self, base: torch.Tensor, coeff: torch.Tensor, k: int) -> torch.Tensor:
        """``base`` plus the sum over writers ``0:k`` of coefficient x difference.

        ``coeff`` is ``[S, *R, k]`` (``R``: the receiver dims, e.g. ``(3, H)`` for a layer's
        q/k/v inputs); ``base`` ``[S, N, T, d]`` broadcasts to the returned
        ``[*R, S, N, T, d]``. Each group is one (batched) matrix product accumulated in place
        into a single buffer: these passes are bound by memory traffic, and a fresh tensor per
        group and per sum doubled it (the profile of tracr ``reverse``, whose groups are
        single heads). A group every set shares (computed before the sets first differ) is
        one plain product for all sets and receivers.
        """
        s, n, t, d = base.shape
        receivers = tuple(coeff.shape[1:-1])
        r = 1
        for size in receivers:
            r *= size
        # A fresh buffer (never a view of ``base``: it is written in place below).
        out = torch.empty(*receivers, s, n, t, d, dtype=base.dtype, device=base.device)
        out.view(r, s, n, t, d).copy_(base.expand(r, s, n, t, d))
        flat = out.view(r, s, n * t * d)
        by_set = coeff.reshape(s, r, k)
        by_receiver = by_set.transpose(0, 1)  # [R, S, k]
        for lo, hi, diff in self._groups_before(k):
            g = hi - lo
            shared = _shared(diff)
            if shared is not None:
                shared = shared.expand(g, n, t, d).reshape(g, n * t * d)
                flat.view(r * s, n * t * d).addmm_(
                    by_receiver[..., lo:hi].reshape(r * s, g), shared
                )
            else:  # exact [g, S, N, T, d]: one product per set
                flat.transpose(0, 1).baddbmm_(
                    by_set[..., lo:hi], diff.view(g, s, n * t * d).transpose(0, 1)
                )
        return out

    def projected(
        self, weight: torch.Tensor, bias: torch.Tensor, coeff: torch.Tensor, k: int
    ) -> torch.Tensor:
        """What ``shifted`` gives, already through a linear map: ``weight [*R, d, e]`` and
        ``bias [*R, e]`` per receiver, ``coeff [S, *R, k]``; returns ``[*R, S, N, T, e]``.

        Only for a stream of one set (every group shared, before the sets differ) and a map
        with no norm before it. Then each receiver's ``x W`` is ``out W + sum c (diff W)``:
        the stream and its differences are projected once, and each set mixes ``e``-wide
        projections instead of ``d``-wide inputs that it then projects itself.
        """
        if self.resid.shape[0] != 1:
            raise EngineError("projected inputs need a stream of one set")
        _, n, t, d = self.resid.shape
        s, receivers = coeff.shape[0], tuple(coeff.shape[1:-1])
        e = weight.shape[-1]
        flat_weight = weight.reshape(-1, d, e)  # [R, d, e]
        r = flat_weight.shape[0]
        parts = [self.resid]
        for lo, hi, diff in self._groups_before(k):
            shared = _shared(diff)
            assert shared is not None  # a stream of one set shares every group
            parts.append(shared.expand(hi - lo, n, t, d))
        inputs = torch.cat(parts).reshape(1 + k, n * t, d)  # the stream, then each diff
        # [R, 1 + k, N*T, e]: one product for all receivers and all shared writers
        projected = torch.einsum("wmd,rde->rwme", inputs, flat_weight)
        base = projected[:, 0] + bias.reshape(r, 1, e)  # [R, N*T, e]
        mix = coeff.reshape(s, r, k).transpose(0, 1)  # [R, S, k]
        out = torch.baddbmm(
            base.reshape(r, 1, n * t * e),
            mix,
            projected[:, 1:].reshape(r, k, n * t * e),
        )
        return out.view(*receivers, s, n, t, e)

    def _groups_before(self, k: int) -> list[tuple[int, int, torch.Tensor]]:
        """The stored groups among writers ``0:k`` (a reader sees a prefix of the writers)."""
        groups = []
        for lo, hi, diff in self.diffs:
            if hi > k:
                if lo < k:
                    raise EngineError(f"reader boundary {k} splits writer group {lo}:{hi}")
                break
            groups.append((lo, hi, diff))
        return groups

    def mixed(self, coeff: torch.Tensor) -> torch.Tensor:
        """Sum over all writers of coefficient x difference: ``coeff [S, W]`` ->
        ``[S, N, T, d]`` (what the logits add to the stream; call it on a narrowed stream)."""
        total: torch.Tensor | None = None
        for lo, hi, diff in self.diffs:
            shared = _shared(diff)
            if shared is not None:
                part = torch.einsum("sg,gntd->sntd", coeff[:, lo:hi], shared)
            else:  # exact [g, S, N, T, d]
                part = torch.einsum("sg,gsntd->sntd", coeff[:, lo:hi], diff)
            total = part if total is None else total + part
        assert total is not None
        return total

    def expand(self, n_sets: int) -> None:
        """Widen a single-set stream to ``n_sets`` identical sets (views, no copies)."""
        self.resid = self.resid.expand(n_sets, *self.resid.shape[1:])
        self.outputs = [o.expand(o.shape[0], n_sets, *o.shape[2:]) for o in self.outputs]
        self.diffs = [
            (lo, hi, d.expand(d.shape[0], n_sets, *d.shape[2:]) if d.ndim == 5 else d)
            for lo, hi, d in self.diffs
        ]

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
        narrow.track, narrow.record = self.track, False
        narrow.outputs, narrow.count = [], self.count
        narrow.resid = _narrowed(self.resid, 0, positions)
        # exact diffs [g, S, N, T, d] (sets on axis 1); fixed deltas [g, N|1, T, d] (none)
        narrow.diffs = [
            (lo, hi, _narrowed(d, 1 if d.ndim == 5 else None, positions))
            for lo, hi, d in self.diffs
        ]
        narrow.narrowed = True
        return narrow


def _shared(diff: torch.Tensor) -> torch.Tensor | None:
    """The one difference ``[g, N|1, T, d]`` every set shares, or None when each set has its
    own: a fixed delta is shared, and so is an exact difference ``[g, S, N, T, d]`` of one set
    or expanded from one (computed before the sets first differ)."""
    if diff.ndim == 4:
        return diff
    if diff.shape[1] == 1 or diff.stride(1) == 0:
        return diff[:, 0]
    return None


def _narrowed(values: torch.Tensor, sets_axis: int | None, positions: torch.Tensor) -> torch.Tensor:
    """``at_positions`` (the example axis is third from last) for a tensor whose sets axis
    may be an expanded view of one set: that one is narrowed once and expanded again, not
    copied for every set."""
    if sets_axis is not None and values.shape[sets_axis] > 1 and values.stride(sets_axis) == 0:
        one = at_positions(values.narrow(sets_axis, 0, 1), values.ndim - 3, positions)
        shape = list(one.shape)
        shape[sets_axis] = values.shape[sets_axis]
        return one.expand(shape)
    return at_positions(values, values.ndim - 3, positions)
