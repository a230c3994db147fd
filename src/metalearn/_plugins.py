"""Names in a config that point to user code: ``package.module:Name`` and entry points.

A config names a learner, model, loss or data source by a built-in short name (``MAML``,
``mlp``, ``mse``, ``sine``), by an import path ``package.module:Name`` (also
``package.module:Outer.Inner``), or by a short name that an installed package registers as an
entry point in one of :data:`ENTRY_POINT_GROUPS`. This module finds the object; what kind of
object each config key needs is checked by :mod:`metalearn.training.experiment`.

A built-in name wins over an entry point of the same name (with a warning), so installing a
package never changes what an existing config means.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from metalearn.config import ConfigError

__all__ = [
    "ENTRY_POINT_GROUPS",
    "MissingComponentError",
    "entry_point_names",
    "import_spec",
    "is_import_spec",
    "name_problem",
    "resolve",
]

#: Entry-point group of each kind of component a config can name.
ENTRY_POINT_GROUPS = {
    "learner": "metalearn.learners",
    "model": "metalearn.models",
    "loss": "metalearn.losses",
    "dataset": "metalearn.datasets",
    "tasks": "metalearn.tasks",
}

_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_HOW_TO_NAME = "package.module:Name (importable: on PYTHONPATH or installed)"


class MissingComponentError(ImportError):
    """A config names a class or function this installation does not have.

    Attributes:
        component: the missing component(s), e.g. ``"metalearn.ANIL"`` or
            ``"mylab.learners:MyLearner"`` (comma-separated).
    """

    def __init__(self, component: str, detail: str = "", message: str | None = None) -> None:
        self.component = component
        super().__init__(
            message or f"{component} is not available in this version of metalearn{detail}"
        )


def is_import_spec(name: str) -> bool:
    """Whether a config name is an import path ``package.module:Name`` (it has a colon)."""
    return ":" in name


def _close(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(name, sorted(set(candidates)), n=n, cutoff=0.6)


def import_spec(spec: str, key: str) -> Any:
    """The object ``package.module:Name`` (or ``package.module:Outer.Inner``) names.

    Args:
        spec: the import path.
        key: the dotted config key holding it, for messages (``"learner.name"``).

    Raises:
        ConfigError: for a malformed path.
        MissingComponentError: when the module cannot be imported (naming it and the error) or
            lacks the attribute (naming close names).

    Example:
        >>> import_spec("torch.nn.functional:mse_loss", "learner.loss").__name__
        'mse_loss'
    """
    if not _SPEC.match(spec):
        raise ConfigError(
            f"{key}: {spec!r} is not an import path; write package.module:Name, e.g. "
            "mylab.learners:MyLearner"
        )
    module_name, _, qualname = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # a missing module, or the module's own code failing
        gone = e.name if isinstance(e, ModuleNotFoundError) else None
        if gone and (module_name == gone or module_name.startswith(gone + ".")):
            fix = "it must be importable: add its folder to PYTHONPATH or install its package"
        else:
            fix = f"fix the module {module_name!r}"
        raise MissingComponentError(
            spec,
            message=f"{key}: cannot import module {module_name!r} of {spec!r} "
            f"({type(e).__name__}: {e}); {fix}",
        ) from e
    where = module_name
    for part in qualname.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_")]
            close = _close(part, public)
            hint = (
                f"; did you mean {' or '.join(close)}?"
                if close
                else f"; it has {', '.join(public[:20])}{' ...' if len(public) > 20 else ''}"
            )
            raise MissingComponentError(
                spec, message=f"{key}: {where} has no attribute {part!r} (from {spec!r}){hint}"
            )
        obj = getattr(obj, part)
        where = f"{where}.{part}" if where != module_name else f"{module_name}:{part}"
    return obj


def _entry_points(group: str) -> dict[str, list[importlib.metadata.EntryPoint]]:
    found: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for ep in importlib.metadata.entry_points(group=group):
        same = found.setdefault(ep.name, [])
        if all(other.value != ep.value for other in same):  # one package seen twice on the path
            same.append(ep)
    return found


def entry_point_names(groups: Sequence[str]) -> list[str]:
    """The names registered under the entry-point ``groups`` by installed packages."""
    return sorted({name for group in groups for name in _entry_points(group)})


def _origin(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{ep.value} from {dist.name} {dist.version}" if dist is not None else ep.value


def name_problem(name: Any, builtins: Sequence[str], groups: Sequence[str]) -> str | None:
    """Why ``name`` cannot name a component (or ``None`` when it can), without importing it.

    A built-in name, a well-formed ``package.module:Name`` or an installed entry point's name is
    fine; anything else gets the accepted forms and the closest name.
    """
    if not isinstance(name, str):
        return f"must be a name, got {name!r}"
    if name in builtins:
        return None
    if is_import_spec(name):
        return None if _SPEC.match(name) else f"{name!r} is not package.module:Name"
    plugins = entry_point_names(groups)
    if name in plugins:
        return None
    close = _close(name, [*builtins, *plugins], n=1)
    installed = f" (installed: {plugins})" if plugins else ""
    return (
        f"must be one of {list(builtins)}, an entry point of {' or '.join(groups)}{installed}, "
        f"or {_HOW_TO_NAME}; got {name!r}" + (f"; did you mean {close[0]}?" if close else "")
    )


def resolve(
    name: str, key: str, builtins: Mapping[str, Any], groups: Sequence[str], kind: str
) -> Any:
    """The object a config ``name`` stands for: a built-in, an entry point, or an import path.

    Args:
        name: the config value.
        key: its dotted config key, for messages.
        builtins: short name -> object of the built-in components.
        groups: the entry-point groups to look in.
        kind: what is looked up, for messages (``"learner"``).

    Raises:
        MissingComponentError: for an unknown name or an import that fails.
        ConfigError: for a malformed import path, or a name two packages register.
    """
    if is_import_spec(name):
        return import_spec(name, key)
    registered = [(g, ep) for g in groups for ep in _entry_points(g).get(name, [])]
    if name in builtins:
        for group, ep in registered:
            warnings.warn(
                f"{key}: {name!r} is a built-in {kind}; the entry point {name!r} of {group} "
                f"({_origin(ep)}) is ignored; to use it, write {ep.value}",
                UserWarning,
                stacklevel=3,
            )
        return builtins[name]
    if len(registered) > 1:
        listed = "; ".join(f"{g}: {_origin(ep)}" for g, ep in registered)
        raise ConfigError(
            f"{key}: {name!r} is registered by more than one installed package ({listed}); "
            f"write the one you mean as package.module:Name"
        )
    if registered:
        group, ep = registered[0]
        if ep.attr is None:
            raise ConfigError(
                f"{key}: the entry point {name!r} of {group} ({_origin(ep)}) names a module, "
                f"not a {kind}; its package must register module:Name"
            )
        try:
            return import_spec(f"{ep.module}:{ep.attr}", key)
        except MissingComponentError as e:
            raise MissingComponentError(
                e.component, message=f"{e} (entry point {name!r} of {group}, {_origin(ep)})"
            ) from e.__cause__
    problem = name_problem(name, list(builtins), groups)
    raise MissingComponentError(name, message=f"{key}: {problem}")
