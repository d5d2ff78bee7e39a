"""Tasks by name, built from spec strings such as ``induction:seq_len=8,n=64`` or
``jsonl:/data/pairs.jsonl``.

Registered in one place (``_builtin``); other modules (the tracr tasks) add themselves by
exposing ``TASKS``, a sequence of ``TaskInfo``, from a module listed in ``EXTRA_MODULES``.
The registry itself is the shared ``circuitreg.registry.Registry``.
"""

from __future__ import annotations

import importlib
from typing import Any

from circuitreg.registry import Registry
from circuitreg.workers.tasks.base import (
    TaskContext,
    TaskData,
    TaskError,
    TaskInfo,
    parse_task_spec,
)
from circuitreg.workers.tasks.generators import docstring_task, greater_than_task, ioi_task
from circuitreg.workers.tasks.induction import build_induction
from circuitreg.workers.tasks.jsonl_task import build_jsonl

EXTRA_MODULES = ("circuitreg.workers.tasks.tracr_task",)


def _int(options: dict[str, str], key: str, default: int) -> int:
    try:
        return int(options.get(key, str(default)))
    except ValueError:
        raise TaskError(f"task option {key}={options[key]!r} is not an integer") from None


def _text_builder(fn: Any) -> Any:
    def build(options: dict[str, str], context: TaskContext) -> TaskData:
        return fn(context, n=_int(options, "n", 64), seed=_int(options, "seed", 0))

    return build


def _builtin() -> list[TaskInfo]:
    return [
        TaskInfo(
            "induction",
            build_induction,
            {"seq_len": "8", "n": "64", "corrupt": "first", "seed": "0", "read": "all"},
            "Repeated random tokens; corrupt=first reveals, corrupt=second hides the "
            "previous-token -> induction key edge; spans A-first, B-first, A-second; "
            "read=last reads only the last position",
        ),
        TaskInfo(
            "jsonl",
            build_jsonl,
            {"path": "", "prepend_bos": "auto"},
            "Prompt pairs from a JSONL file (clean, corrupted, answer, distractor); "
            "prepend_bos=auto adds the model's BOS unless a prompt starts with it",
            positional="path",
        ),
        TaskInfo(
            "ioi",
            _text_builder(ioi_task),
            {"n": "64", "seed": "0"},
            "Indirect object identification (ABC corruption)",
            needs_tokenizer=True,
        ),
        TaskInfo(
            "greater_than",
            _text_builder(greater_than_task),
            {"n": "64", "seed": "0"},
            "Greater-than on years (start year 01 corruption)",
            needs_tokenizer=True,
        ),
        TaskInfo(
            "docstring",
            _text_builder(docstring_task),
            {"n": "64", "seed": "0"},
            "Docstring argument completion (renamed def arguments)",
            needs_tokenizer=True,
        ),
    ]


class TaskRegistry(Registry[TaskInfo]):
    """Registered tasks; refuses duplicate names."""

    def __init__(self) -> None:
        super().__init__("task", error=TaskError)

    def register(self, info: TaskInfo) -> None:
        """Add a task; ``TaskError`` if its name is taken."""
        self.add(info.name, info)

    def describe(self) -> list[dict[str, Any]]:
        """Name, options and description of every task."""
        return [
            {
                "name": t.name,
                "options": dict(t.options),
                "description": t.description,
                "needs_tokenizer": t.needs_tokenizer,
            }
            for t in (self.get(n) for n in self.names())
        ]

    def build(self, spec: str, context: TaskContext) -> TaskData:
        """Build a task from its spec string; unknown options are an error."""
        name, options = parse_task_spec(spec)
        info = self.get(name)
        if "" in options:
            if info.positional is None:
                raise TaskError(f"task {name!r} takes key=value options, got {options['']!r}")
            options = {info.positional: options.pop("")}
        unknown = sorted(set(options) - set(info.options))
        if unknown:
            raise TaskError(
                f"task {name!r} has no option(s) {', '.join(unknown)}; "
                f"options: {', '.join(info.options) or 'none'}"
            )
        return info.builder(options, context)


_DEFAULT: TaskRegistry | None = None


def default_registry() -> TaskRegistry:
    """The process-wide task registry with every built-in task."""
    global _DEFAULT
    if _DEFAULT is None:
        registry = TaskRegistry()
        for info in _builtin():
            registry.register(info)
        for module_name in EXTRA_MODULES:
            for info in importlib.import_module(module_name).TASKS:
                registry.register(info)
        _DEFAULT = registry
    return _DEFAULT


def build_task(spec: str, model: Any | None = None, context: TaskContext | None = None) -> TaskData:
    """Build a task for a model from a spec string.

    ``model`` is a bridge (its vocabulary and tokenizer) or a ``LoadedModel`` (which also
    knows the BOS token a toy model was trained with).
    """
    if context is None:
        if model is None:
            raise TaskError("build_task needs a model or a TaskContext")
        if hasattr(model, "bridge"):
            context = TaskContext.from_loaded(model)
        else:
            context = TaskContext.from_model(model)
    return default_registry().build(spec, context)
