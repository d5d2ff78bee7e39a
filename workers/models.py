"""Load a model from a spec string into a ``TransformerBridge`` with its ``ModelRef``.

Specs, tried in this order:

* ``tracr:reverse`` / ``tracr:frac_prevs`` — a compiled RASP program from the committed
  fixtures; ``tracr:path/to/file.py:make_program`` compiles any program (needs the ``tracr``
  extra).
* ``toy:induction`` or ``toy:induction:seed=1,step=150`` — the toy induction model, trained
  once and cached (``ensure_induction_toy``); ``step`` picks a checkpoint (default: the last),
  other keys are ``ToyConfig`` fields.
* ``tl:DIR`` — a classic TransformerLens checkpoint: ``DIR/config.json`` (the
  ``HookedTransformerConfig`` fields) and one weights file in ``HookedTransformer`` naming
  (``*.pt``/``*.pth`` or ``*.safetensors``; ``tl:DIR/FILE`` picks one of several), loaded
  into TL4's native model (``circuitreg.workers.tl_checkpoint``);
* a path to a toy checkpoint (``step-*.safetensors`` with ``config.json`` beside it), or to a
  toy run directory (its last checkpoint);
* a path to a Hugging Face model directory (``config.json`` with a ``model_type``);
* otherwise a Hugging Face hub name, optionally ``name@revision``; this needs a reachable hub
  (or the hub cache) and fails with a message saying so.

The ``revision`` in the ``ModelRef`` is the SHA-256 of the weights file(s) for local models,
so two circuits found "in the same model" provably used the same weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from circuitreg.schema.circuit import ModelRef

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?(@[\w.\-/]+)?$")
_HF_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


class ModelLoadError(ValueError):
    """A model spec that cannot be loaded; the message names the spec and the reason.

    The message is one line; ``detail`` keeps what the underlying library said (the hub's
    network errors run to several lines), for ``--verbose``.
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


SPEC_KINDS = (
    "toy:induction[:key=value,...], tracr:PROGRAM, tl:DIR (a TransformerLens checkpoint), "
    "a toy run or checkpoint path, a Hugging Face model directory, or a Hugging Face hub "
    "name[@revision]"
)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for discovery: the bridge, what it is, and where it runs.

    ``source`` is ``toy``, ``tl``, ``hf``, ``hub`` or ``tracr``; ``info`` holds what tasks need from
    the source (for the toy: ``d_vocab``, ``seq_len``, ``bos_token``; for tracr: the fixture's
    vocabulary and encoding).
    """

    bridge: TransformerBridge
    ref: ModelRef
    device: str
    spec: str
    source: str
    info: dict[str, Any] = field(default_factory=dict)


def sha256_of_files(paths: list[Path]) -> str:
    """SHA-256 over the files' bytes in the given order (hex)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def resolve_model_device(device: str | None) -> str:
    """``cpu`` or ``cuda:N`` for an explicit device, ``auto`` or None (the setting)."""
    from circuitreg.settings import get_settings
    from circuitreg.workers.runtime.device import DeviceError, resolve_device

    try:
        return resolve_device(device or get_settings().device)
    except DeviceError as exc:
        raise ModelLoadError(str(exc)) from None


def _ref_from_bridge(bridge: TransformerBridge, **fields: Any) -> ModelRef:
    cfg = bridge.cfg
    return ModelRef(
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        d_model=int(cfg.d_model),
        attn_only=bool(cfg.attn_only),
        parallel_attn_mlp=bool(getattr(cfg, "parallel_attn_mlp", False)),
        **fields,
    )


def _load_toy_checkpoint(path: Path, device: str, spec: str) -> LoadedModel:
    from circuitreg.workers.toy.checkpoint import ToyCheckpointError, load_toy_bridge

    try:
        bridge, info = load_toy_bridge(path, device)
    except ToyCheckpointError as exc:
        raise ModelLoadError(f"model {spec!r}: {exc}") from None
    ref = _ref_from_bridge(
        bridge,
        name=f"toy-induction-{info.config_hash}",
        architecture="TransformerLensNative",
        checkpoint=f"step-{info.step}",
        step=info.step,
        revision=sha256_of_files([path]),
    )
    extra = {
        "d_vocab": info.config.d_vocab,
        "seq_len": info.config.seq_len,
        "bos_token": info.config.bos_token,
        "toy_config": info.config.to_dict(),
        "path": str(path),
    }
    return LoadedModel(bridge, ref, device, spec, "toy", extra)


def _load_toy_spec(options: str, device: str, spec: str) -> LoadedModel:
    """``toy:induction[:k=v,...]``: the cached toy run for that config, one checkpoint."""
    from circuitreg.workers.toy import ToyConfig, ToyConfigError, ensure_induction_toy

    name, _, rest = options.partition(":")
    if name != "induction":
        raise ModelLoadError(f"model {spec!r}: unknown toy {name!r} (known: induction)")
    values: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq:
            raise ModelLoadError(f"model {spec!r}: {part!r} is not key=value")
        try:
            values[key.strip()] = (
                float(value) if key.strip() in ("lr", "weight_decay") else int(value)
            )
        except ValueError:
            raise ModelLoadError(f"model {spec!r}: {key}={value!r} is not a number") from None
    step = values.pop("step", None)
    try:
        run = ensure_induction_toy(ToyConfig.from_dict(values))
    except (ToyConfigError, TypeError) as exc:
        raise ModelLoadError(f"model {spec!r}: {exc}") from None
    try:
        ckpt = run.final if step is None else run.checkpoint_at(int(step))
    except KeyError as exc:
        raise ModelLoadError(f"model {spec!r}: {exc.args[0]}") from None
    return _load_toy_checkpoint(ckpt.path, device, spec)


def _load_tl_spec(target: str, device: str, spec: str) -> LoadedModel:
    """``tl:DIR`` or ``tl:DIR/FILE``: a HookedTransformer config and state dict on disk."""
    from circuitreg.workers.tl_checkpoint import TLCheckpointError, load_tl_bridge

    if not target:
        raise ModelLoadError(f"model {spec!r}: tl: needs a directory, e.g. tl:./my_tl_model")
    path = Path(target).expanduser()
    directory = path if path.is_dir() else path.parent
    try:
        bridge, checkpoint = load_tl_bridge(path, device, model_name=directory.name)
    except TLCheckpointError as exc:
        raise ModelLoadError(f"model {spec!r}: {exc}") from None
    tl_config = checkpoint.tl_config
    name = tl_config.get("model_name")
    step = tl_config.get("checkpoint_value")
    if tl_config.get("checkpoint_label_type") != "step" or not isinstance(step, int) or step < 0:
        step = None
    ref = _ref_from_bridge(
        bridge,
        name=name if isinstance(name, str) and name and name != "custom" else directory.name,
        architecture="TransformerLensNative",
        checkpoint=checkpoint.weights_path.name,
        step=step,
        revision=sha256_of_files([checkpoint.weights_path]),
    )
    extra = {
        "path": str(directory),
        "weights": str(checkpoint.weights_path),
        "d_vocab": int(checkpoint.bridge_config["d_vocab"]),
        "n_ctx": int(checkpoint.bridge_config["n_ctx"]),
        "tl_config": tl_config,
        "bridge_config": checkpoint.bridge_config,
    }
    return LoadedModel(bridge, ref, device, spec, "tl", extra)


def _hf_weight_files(directory: Path) -> list[Path]:
    files: list[Path] = []
    for pattern in _HF_WEIGHT_PATTERNS:
        files.extend(sorted(directory.glob(pattern)))
    return files


def _load_hf_directory(directory: Path, device: str, spec: str) -> LoadedModel:
    from transformer_lens.model_bridge import TransformerBridge

    config = json.loads((directory / "config.json").read_text())
    if isinstance(config, dict) and "model_type" not in config and "d_model" in config:
        raise ModelLoadError(
            f"model {spec!r}: config.json has no model_type but a d_model, like a "
            f"TransformerLens config; load it as tl:{directory}"
        )
    weights = _hf_weight_files(directory)
    if not weights:
        raise ModelLoadError(f"model {spec!r}: no *.safetensors or pytorch_model*.bin weights")
    try:
        bridge = TransformerBridge.boot_transformers(str(directory), device=device)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"model {spec!r}: cannot load the Hugging Face model: {exc}") from None
    architectures = config.get("architectures") or [config.get("model_type", "unknown")]
    ref = _ref_from_bridge(
        bridge,
        name=directory.name,
        architecture=str(architectures[0]),
        revision=sha256_of_files(weights),
    )
    return LoadedModel(bridge, ref, device, spec, "hf", {"path": str(directory)})


HUB_PROBE_SECONDS = 3.0


def _hub_problem(name: str, revision: str | None) -> str | None:
    """Why the hub cannot serve ``name`` now, or None to go ahead and load it.

    Without this check an unreachable hub costs 30 s of retries, logged line by line,
    before the load fails: a model in the local cache loads offline, and otherwise one TCP
    connection to the endpoint, with a short timeout, says whether trying is worth it.
    """
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set and the model is not in the local cache"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((endpoint.hostname or "", port), HUB_PROBE_SECONDS).close()
    except OSError as exc:
        return f"the hub {endpoint.geturl()} cannot be reached ({exc})"
    return None


def _load_hub(spec: str, device: str) -> LoadedModel:
    from transformer_lens.model_bridge import TransformerBridge

    name, _, revision = spec.partition("@")
    problem = _hub_problem(name, revision or None)
    if problem is not None:
        raise ModelLoadError(
            f"unknown model {spec!r}: not a local path nor in the Hugging Face cache, and "
            f"{problem}; a model spec is {SPEC_KINDS}",
        )
    try:
        bridge = TransformerBridge.boot_transformers(name, device=device, revision=revision or None)
    except OSError as exc:
        raise ModelLoadError(
            f"unknown model {spec!r}: not a local path, and the Hugging Face hub (or its "
            f"local cache) has no such model or cannot be reached; a model spec is {SPEC_KINDS}",
            detail=str(exc),
        ) from None
    hf_config = getattr(bridge.original_model, "config", None)
    commit = getattr(hf_config, "_commit_hash", None) or revision or None
    architectures = getattr(hf_config, "architectures", None) or ["unknown"]
    ref = _ref_from_bridge(bridge, name=name, architecture=str(architectures[0]), revision=commit)
    return LoadedModel(bridge, ref, device, spec, "hub", {})


def _load_path(path: Path, device: str, spec: str) -> LoadedModel:
    from circuitreg.workers.toy.checkpoint import CONFIG_FILE, CONFIG_KIND

    if path.is_file():
        if path.suffix != ".safetensors":
            raise ModelLoadError(f"model {spec!r}: a file spec must be a .safetensors checkpoint")
        if _is_toy_config(path.parent / CONFIG_FILE, CONFIG_KIND):
            return _load_toy_checkpoint(path, device, spec)
        if (path.parent / "config.json").is_file():
            return _load_hf_directory(path.parent, device, spec)
        raise ModelLoadError(f"model {spec!r}: no config.json beside the checkpoint")
    if _is_toy_config(path / CONFIG_FILE, CONFIG_KIND):
        from circuitreg.workers.toy import ToyRunError, load_run

        try:
            run = load_run(path)
        except ToyRunError as exc:
            raise ModelLoadError(f"model {spec!r}: {exc}") from None
        return _load_toy_checkpoint(run.final.path, device, spec)
    if (path / "config.json").is_file():
        return _load_hf_directory(path, device, spec)
    raise ModelLoadError(
        f"model {spec!r}: directory holds neither a toy run nor a Hugging Face config.json"
    )


def _is_toy_config(path: Path, kind: str) -> bool:
    if not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text()).get("kind") == kind)
    except (json.JSONDecodeError, AttributeError):
        return False


def load_model(spec: str, device: str | None = None) -> LoadedModel:
    """Load the model named by ``spec`` (see the module docstring) onto ``device``.

    ``device`` is ``cpu``, ``cuda:N``, ``auto`` (the CUDA device with the most free memory,
    else the CPU) or None (the ``CIRCUITREG_DEVICE`` setting).
    """
    spec = spec.strip()
    if not spec:
        raise ModelLoadError("empty model spec")
    resolved = resolve_model_device(device)
    if spec.startswith("tracr:"):
        from circuitreg.workers.tracr.loading import load_tracr_model

        return load_tracr_model(spec, resolved)
    if spec.startswith("toy:"):
        return _load_toy_spec(spec.removeprefix("toy:"), resolved, spec)
    if spec.startswith("tl:"):
        return _load_tl_spec(spec.removeprefix("tl:"), resolved, spec)
    path = Path(spec).expanduser()
    if path.exists():
        return _load_path(path, resolved, spec)
    kind, colon, _ = spec.partition(":")
    if colon and "/" not in kind and not spec.startswith((".", "/", "~")):
        raise ModelLoadError(
            f"unknown model spec kind {kind + ':'!r} in {spec!r}; a model spec is {SPEC_KINDS}"
        )
    if (
        spec.startswith((".", "/", "~"))
        or spec.endswith(".safetensors")
        or not _HUB_NAME.match(spec)
    ):
        raise ModelLoadError(f"model {spec!r}: no such file or directory")
    return _load_hub(spec, resolved)


class ModelCache:
    """The last ``max_models`` loaded models, keyed by spec and device (least recent evicted).

    A worker runs many jobs on the same few models; reloading (and, for the toy, re-reading
    checkpoints) for each job would dominate small jobs. Thread-safe.
    """

    def __init__(self, max_models: int = 2) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        self.max_models = max_models
        self._models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: str, device: str | None = None) -> LoadedModel:
        """The loaded model for ``spec`` on ``device``, loading it on a miss."""
        key = (spec.strip(), resolve_model_device(device))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        model = load_model(key[0], key[1])
        with self._lock:
            self._models[key] = model
            self._models.move_to_end(key)
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
        return model

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, key: object) -> bool:
        return key in self._models

    def clear(self) -> None:
        """Forget every cached model."""
        with self._lock:
            self._models.clear()
