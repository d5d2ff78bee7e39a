"""A group of writers in the engine's residual stream: what its readers' patch coefficients
multiply, and its own outputs where they differ per set, kept low rank for heads.

Kept apart from ``stream.py`` (the running sum and the readers' inputs) because this is
where each kind of writer decides how it is summed, weighted and projected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuitreg.workers.engine.blocks import at_positions, head_outputs


@dataclass
class WriterGroup:
    """The writers ``lo:hi`` produced together (the input, a layer's heads, an MLP).

    ``row`` ``[g, N|1, T, d]`` is what each writer's patch coefficient ``c`` multiplies, the
    same for every set: the difference ablated minus output for a group every set shares
    (computed before the sets first differ), otherwise the ablated outputs (exact patching)
    or the fixed delta. A group whose outputs differ per set keeps them, weighted ``1 - c``
    (exact) or 1 (fixed delta) in each reader: a layer's heads as their ``z``
    ``[S, N, T, g * d_head]`` with ``w_o`` ``[g, d_head, d]`` (low rank, so a reader with no
    norm projects them without forming them ``d_model``-wide), anything else as ``outputs``
    ``[g, S, N, T, d]``. A shared group's outputs are in the stream's common part instead.
    """

    lo: int
    hi: int
    row: torch.Tensor
    z: torch.Tensor | None = None
    w_o: torch.Tensor | None = None
    outputs: torch.Tensor | None = None

    @property
    def per_set(self) -> bool:
        """Whether the group's outputs differ per set (else they are in the common part)."""
        return self.z is not None or self.outputs is not None

    def full_outputs(self) -> torch.Tensor:
        """The group's outputs ``[g, S, N, T, d]`` (formed from ``z`` and ``w_o`` for heads,
        once)."""
        if self.outputs is None:
            assert self.z is not None and self.w_o is not None
            s, n, t, _ = self.z.shape
            g, d_head, _ = self.w_o.shape
            heads_first = self.z.view(s, n, t, g, d_head).permute(3, 0, 1, 2, 4)
            self.outputs = head_outputs(heads_first, self.w_o)
        return self.outputs

    def weighted_sum(self, weight: torch.Tensor) -> torch.Tensor:
        """``sum_w weight[s, w] * output_w[s]`` for ``weight [S, g]``: ``[S, N, T, d]`` (for
        heads not yet formed, one product through ``W_O``; else one product per set)."""
        if self.outputs is None and self.z is not None and self.w_o is not None:
            s, n, t, width = self.z.shape
            g, d_head, d = self.w_o.shape
            scaled = self.z.view(s, n, t, g, d_head) * weight[:, None, None, :, None]
            return (scaled.view(s * n * t, width) @ self.w_o.reshape(width, d)).view(s, n, t, d)
        outputs = self.full_outputs()
        g, s, n, t, d = outputs.shape
        by_set = outputs.view(g, s, n * t * d).transpose(0, 1)  # a view: no copy per set
        return torch.bmm(weight.unsqueeze(1), by_set).view(s, n, t, d)

    def factor(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The per-set outputs as ``left @ right``: ``left`` ``[S, N*T, g*f]`` and ``right``
        ``[g, f, d]`` (``w_o`` for heads), or None for the identity (``f = d``)."""
        if self.z is not None:
            s, n, t, width = self.z.shape
            return self.z.view(s, n * t, width), self.w_o
        outputs = self.full_outputs()
        g, s, n, t, d = outputs.shape
        return outputs.permute(1, 2, 3, 0, 4).reshape(s, n * t, g * d), None

    def projected(self, weight: torch.Tensor, w_all: torch.Tensor) -> torch.Tensor:
        """``sum_w weight[s, r, w] * output_w[s] @ W_r`` for ``weight [S, R, g]`` and the
        receivers' maps side by side, ``w_all [d, R*e]``: ``[S, N*T, R*e]``. Computed as
        ``left @ (weight x right W)``: the weights are folded into the small matrix
        ``right W`` (``W_O W_Q`` etc. for heads, ``d_head`` square), so no set forms a
        ``d_model``-wide input per receiver."""
        left, right = self.factor()
        g, d = self.hi - self.lo, w_all.shape[0]
        s, r = weight.shape[:2]
        if right is None:
            per_writer = w_all.expand(g, d, w_all.shape[1])
        else:
            per_writer = torch.matmul(right, w_all)  # [g, f, R*e]
        f = per_writer.shape[1]
        scaled = per_writer.view(1, g, f, r, -1) * weight.transpose(1, 2)[..., None, :, None]
        return torch.bmm(left, scaled.reshape(s, g * f, -1))

    def narrowed(self, positions: torch.Tensor) -> WriterGroup:
        """This group at each example's ``positions [N, P]`` (heads narrow their ``z``)."""
        # Per-set outputs are never an expanded view of one set (those are shared, in the
        # stream's common part), so each is gathered as it is.
        row = at_positions(self.row, 1, positions)  # [g, N|1, T, d]
        z = None if self.z is None else at_positions(self.z, 1, positions)  # [S, N, T, w]
        outputs = None if self.outputs is None else at_positions(self.outputs, 2, positions)
        return WriterGroup(self.lo, self.hi, row, z=z, w_o=self.w_o, outputs=outputs)
