"""Experiment configs: a small tree of dataclasses read from YAML and validated strictly.

Every key is checked: an unknown key or a bad value raises :class:`ConfigError` naming the
dotted key (``learner.inner_lrr: unknown key; did you mean inner_lr?``). Sections whose objects
take more arguments than the schema lists (``data``, ``model``, ``learner``, ``optimizer``,
``scheduler``) keep the other keys as keyword arguments for the object they build; those are
checked against its constructor when the experiment is built
(:func:`metalearn.training.experiment.check_config`).

Example:
    >>> cfg = load_config("configs/sine/maml.yaml", overrides=["train.iterations=100"])
    >>> cfg.train.iterations, cfg.learner.name
    (100, 'MAML')
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LearnerConfig",
    "ModelConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "TestConfig",
    "TrainConfig",
    "apply_overrides",
    "config_changes",
    "config_from_dict",
    "load_config",
    "suggest",
]


class ConfigError(ValueError):
    """A config key is unknown, missing, or has a bad value; the message names the dotted key."""


# -- value checks (return an error message, or None when the value is fine) ---------------------
def _positive(value: Any) -> str | None:
    return None if value is None or value > 0 else f"must be > 0, got {value}"


def _non_negative(value: Any) -> str | None:
    return None if value is None or value >= 0 else f"must be >= 0, got {value}"


def _all_non_negative(values: Any) -> str | None:
    if values is None:
        return None
    if not values:
        return "must list at least one inner step count"
    return None if all(v >= 0 for v in values) else f"must all be >= 0, got {values}"


def _check(check: Callable[[Any], str | None]) -> dict[str, Any]:
    return {"check": check}


def _component(builtins: tuple[str, ...], *kinds: str) -> Callable[[Any], str | None]:
    """A check for a name of a built-in, an entry point of ``kinds``, or ``package.module:Name``
    (the object itself is imported when the experiment is built)."""

    def check(name: Any) -> str | None:
        from metalearn._plugins import ENTRY_POINT_GROUPS, name_problem

        return name_problem(name, builtins, [ENTRY_POINT_GROUPS[k] for k in kinds])

    return check


#: Built-in short names; a config may also name user code (see :mod:`metalearn._plugins`).
DATA_NAMES = ("sine", "omniglot", "miniimagenet")
MODEL_NAMES = ("mlp", "conv4")
LOSS_NAMES = ("mse", "cross_entropy")


#: Field metadata marking the dict that collects a section's other keys (constructor kwargs).
EXTRA = {"extra": True}


@dataclass
class DataConfig:
    """Where tasks come from.

    ``name`` is ``sine`` (:class:`metalearn.tasks.Sine`), ``omniglot`` or ``miniimagenet``
    (:class:`metalearn.tasks.FewShot` over :mod:`metalearn.datasets`), or a task sampler or
    class dataset of your own: ``package.module:Name`` or the name of an entry point in
    ``metalearn.tasks`` / ``metalearn.datasets``. Other keys are passed to ``Sine`` (``amplitude``,
    ``phase``, ``x_range`` ...), to the sampler or to the dataset class.
    """

    name: str = field(metadata=_check(_component(DATA_NAMES, "tasks", "dataset")))
    k_shot: int = field(metadata=_check(_positive))
    k_query: int = field(metadata=_check(_positive))
    n_way: int | None = field(default=None, metadata=_check(_positive))
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    options: dict[str, Any] = field(default_factory=dict, metadata=EXTRA)

    def validate(self, path: str) -> None:
        if self.name in ("omniglot", "miniimagenet"):
            for key in ("n_way", "root"):
                if getattr(self, key) is None:
                    raise ConfigError(f"{path}.{key}: required for {self.name} tasks")


@dataclass
class ModelConfig:
    """The network: ``mlp`` (:class:`metalearn.models.MLP`, give ``sizes``) or ``conv4``
    (:class:`metalearn.models.Conv4`; ``n_classes``, ``in_channels`` and ``image_size`` default
    to the data's), or a model of your own: ``package.module:Name`` or an entry point of
    ``metalearn.models``. Other keys are the class's constructor arguments."""

    name: str = field(metadata=_check(_component(MODEL_NAMES, "model")))
    options: dict[str, Any] = field(default_factory=dict, metadata=EXTRA)


@dataclass
class LearnerConfig:
    """The learner: a class name on the ``metalearn`` package (``MAML``, ``FOMAML``, ...), a
    learner of your own as ``package.module:Name``, or an entry point of ``metalearn.learners``.

    ``loss`` is ``mse``, ``cross_entropy``, ``package.module:function`` or an entry point of
    ``metalearn.losses``. Other keys (``first_order``, ``adapt``, ``vectorize`` ...) are the
    learner's constructor arguments;
    ``update`` is an update rule in its config form, e.g. ``{name: adam, lr: 0.001,
    betas: [0.0, 0.999]}`` (:func:`metalearn.updates.rule_from_config`).
    """

    name: str
    inner_lr: float = field(metadata=_check(_non_negative))
    loss: str = field(default="mse", metadata=_check(_component(LOSS_NAMES, "loss")))
    inner_steps: int = field(default=1, metadata=_check(_non_negative))
    options: dict[str, Any] = field(default_factory=dict, metadata=EXTRA)

    def validate(self, path: str) -> None:
        for key in ("inner_optimizer", "adam_betas"):
            if key in self.options:
                raise ConfigError(
                    f"{path}.{key}: removed; the inner update rule is now learner.update, e.g. "
                    "update: {name: adam, lr: 0.001, betas: [0.0, 0.999]} (Reptile's Adam), "
                    "or {name: sgd, lr: 0.01} (the default, sgd with inner_lr)"
                )


@dataclass
class OptimizerConfig:
    """The meta-optimizer; other keys (``weight_decay``, ``betas``, ``momentum``) go to it."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = field(default=1e-3, metadata=_check(_positive))
    options: dict[str, Any] = field(default_factory=dict, metadata=EXTRA)


@dataclass
class SchedulerConfig:
    """A learning-rate schedule, stepped every meta-update: ``cosine`` (``T_max`` defaults to
    the iterations), ``linear`` (``start_factor``, ``end_factor``; ``total_iters`` defaults to
    the iterations), ``step`` (``step_size``, ``gamma``) or ``exponential`` (``gamma``)."""

    name: Literal["cosine", "linear", "step", "exponential"]
    options: dict[str, Any] = field(default_factory=dict, metadata=EXTRA)


@dataclass
class TrainConfig:
    """The meta-training loop (see :class:`metalearn.training.Trainer`)."""

    iterations: int = field(metadata=_check(_positive))
    meta_batch_size: int = field(metadata=_check(_positive))
    grad_clip: float | None = field(default=None, metadata=_check(_positive))
    amp: bool = False
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    compile: bool = False
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = "default"
    checkpoint_every: int = field(default=1000, metadata=_check(_positive))
    plot: bool = True
    tensorboard: bool | None = None
    tune_allocator: bool = True
    chunk_size: int | None = field(default=None, metadata=_check(_positive))

    def validate(self, path: str) -> None:
        if self.compile and self.amp:
            raise ConfigError(
                f"{path}.compile: a compiled learner cannot run under AMP (float16 loss scaling "
                "would not reach the inner gradients); set amp: false or compile: false"
            )


@dataclass
class EvalConfig:
    """Periodic validation on a fixed task set; the best state by ``metric`` is kept."""

    every: int = field(default=1000, metadata=_check(_positive))
    num_tasks: int = field(default=100, metadata=_check(_positive))
    steps: int | None = field(default=None, metadata=_check(_non_negative))
    seed: int = 1
    k_query: int | None = field(default=None, metadata=_check(_positive))
    batch_size: int = field(default=25, metadata=_check(_positive))
    metric: str | None = None


@dataclass
class TestConfig:
    """The final evaluation: ``num_tasks`` fixed test tasks, query metrics after each of
    ``steps`` inner steps (the papers use more steps than in training)."""

    __test__ = False  # not a pytest test class

    num_tasks: int = field(default=600, metadata=_check(_positive))
    steps: list[int] | None = field(default=None, metadata=_check(_all_non_negative))
    seed: int = 2
    k_query: int | None = field(default=None, metadata=_check(_positive))
    batch_size: int = field(default=25, metadata=_check(_positive))


@dataclass
class Config:
    """A whole experiment: one YAML file under ``configs/``."""

    data: DataConfig
    model: ModelConfig
    learner: LearnerConfig
    train: TrainConfig
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig | None = None
    validation: EvalConfig | None = None
    test: TestConfig | None = None
    seed: int = 0
    device: str = "auto"
    run_dir: str | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the YAML's shape), e.g. to store in a checkpoint."""
        return _to_dict(self)


# -- reading -----------------------------------------------------------------------------------
def suggest(key: str, candidates: Iterable[str]) -> str:
    """``"; did you mean X?"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """``value`` as type ``tp`` (a small subset of typing: what the schema uses)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: bad value {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = suggest(str(value), [str(c) for c in choices])
            raise ConfigError(f"{path}: must be one of {list(choices)}, got {value!r}{hint}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]  # "steps: 10" means [10]
        if not isinstance(value, list):
            raise ConfigError(f"{path}: must be a list, got {value!r}")
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return config_from_dict(value, tp, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{path}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: must be a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"{path}: the schema type {_type_name(tp)} is not supported")


def config_from_dict(data: Any, cls: type = Config, path: str = "") -> Any:
    """Build and validate the dataclass ``cls`` from plain data (e.g. parsed YAML).

    Raises:
        ConfigError: naming the dotted key of the first unknown key, missing key or bad value.
    """
    if not isinstance(data, Mapping):
        where = path or "the config"
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    extra = next((f.name for f in fields.values() if f.metadata.get("extra")), None)
    known = [name for name in fields if name != extra]
    kwargs: dict[str, Any] = {}
    others: dict[str, Any] = {}
    for key, value in data.items():
        key_path = _join(path, str(key))
        if not isinstance(key, str):
            raise ConfigError(f"{key_path}: keys must be strings, got {key!r}")
        if key not in known:
            if extra is None:
                raise ConfigError(f"{key_path}: unknown key{suggest(key, known)}")
            others[key] = value
            continue
        kwargs[key] = _coerce(value, hints[key], key_path)
        check = fields[key].metadata.get("check")
        problem = check(kwargs[key]) if check else None
        if problem:
            raise ConfigError(f"{key_path}: {problem}")
    for name in known:
        f = fields[name]
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and name not in kwargs:
            raise ConfigError(f"{_join(path, name)}: missing required key")
    if extra is not None:
        kwargs[extra] = others
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def _to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("extra"):
                out.update(value)
            else:
                out[f.name] = _to_dict(value)
        return out
    if isinstance(obj, list):
        return [_to_dict(v) for v in obj]
    return obj


def _yaml_loader() -> type:
    """PyYAML's safe loader, also reading ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader


def _parse_yaml(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader: builds plain data only


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return _parse_yaml(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set dotted keys in a config dict: ``["learner.inner_lr=0.05", "validation=null"]``.

    Values are parsed as YAML (``true``, ``0.01``, ``[1, 40, 1]``, ``null``); unknown keys are
    reported when the result is validated.

    Raises:
        ConfigError: for an override that is not ``key=value`` or descends into a value.
    """
    data = dict(data)
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"override {override!r}: expected key=value, e.g. train.iterations=100"
            )
        parts = key.split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif isinstance(child, Mapping):
                child = dict(child)
            else:
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {override!r}: {where} is a value, not a section")
            node[part] = child
            node = child
        node[parts[-1]] = _parse_value(text)
    return data


def load_config(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config, apply ``key=value`` overrides and validate it.

    Args:
        path: a YAML file (see ``configs/``).
        overrides: dotted ``key=value`` strings applied before validation.

    Returns:
        The validated :class:`Config`.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ConfigError: naming the first bad key (prefixed by the file name).
    """
    try:
        import yaml
    except ImportError as e:
        raise ImportError(f"reading configs needs PyYAML, a dependency of metalearn ({e})") from e
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    try:
        data = _parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    try:
        return config_from_dict(apply_overrides(dict(data), overrides))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


RESUMABLE_CHANGES = (
    "train.iterations",
    "train.checkpoint_every",
    "train.plot",
    "train.tensorboard",
    "train.tune_allocator",
    "train.chunk_size",
    "device",
    "run_dir",
    "description",
    "data.root",
    "validation.batch_size",
    "test",
)
"""Keys (and sections) that may differ when a run is resumed: they change neither what was
trained nor how the rest is trained (a longer run, where the data lives, the final test, memory,
output)."""


def _flatten(data: Any, path: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping) and (data or not path):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, _join(path, str(key))))
        return out
    return {path: data}


def _schedule_defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    # Schedules whose length defaults to train.iterations change with it: compare them filled in.
    scheduler = data.get("scheduler")
    if not isinstance(scheduler, Mapping):
        return dict(data)
    length = {"cosine": "T_max", "linear": "total_iters"}.get(scheduler.get("name"))
    if length is None or length in scheduler:
        return dict(data)
    iterations = data.get("train", {}).get("iterations")
    return {**data, "scheduler": {**scheduler, length: iterations}}


def _covered(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_changes(stored: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose value differs between two configs (plain data), as ``(stored, new)``.

    Keys of :data:`RESUMABLE_CHANGES` are left out, as is a schedule length that only follows
    ``train.iterations``. A key missing on one side shows as ``None`` there.

    Example:
        >>> config_changes({"seed": 0, "train": {"iterations": 10}},
        ...                {"seed": 1, "train": {"iterations": 20}})
        {'seed': (0, 1)}
    """
    old_flat = _flatten(_schedule_defaults(stored))
    new_flat = _flatten(_schedule_defaults(new))
    changes = {}
    for key in sorted(old_flat.keys() | new_flat.keys()):
        old, value = old_flat.get(key), new_flat.get(key)
        if old != value and not _covered(key, RESUMABLE_CHANGES):
            changes[key] = (old, value)
    return changes
