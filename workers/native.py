"""TransformerLens 4's native model wrapped as a ``TransformerBridge``, as ``boot_native`` does.

The toy checkpoints and classic TransformerLens checkpoints both end as a ``NativeModel``;
this is the one place that turns one into the bridge every method runs on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def native_bridge(model: Any, cfg: Any, device: str, name: str) -> TransformerBridge:
    """``model`` (a ``NativeModel`` built from ``cfg``) on ``device`` in eval mode, bridged."""
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    bridge: TransformerBridge = build_bridge_from_module(
        model.to(device).eval(),
        architecture="TransformerLensNative",
        tl_config=cfg,
        device=device,
        model_name=name,
    )
    return bridge
