"""From a :class:`~metalearn.config.Config` to objects: samplers, model, learner, trainer.

Objects are found by name: learners by class name on the ``metalearn`` package (``MAML``,
``FOMAML``, ``Pretrain``, ...), tasks by ``sine``/``omniglot``/``miniimagenet``, models by
``mlp``/``conv4``, losses by ``mse``/``cross_entropy``. The image datasets are imported only
when a config needs them. Each of these may also be user code: ``package.module:Name``, or a
name an installed package registers as an entry point (:data:`ENTRY_POINT_GROUPS`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import metalearn
from metalearn._plugins import (
    ENTRY_POINT_GROUPS,
    MissingComponentError,
    entry_point_names,
    is_import_spec,
    resolve,
)
from metalearn.algorithms.base import Learner
from metalearn.algorithms.updates import rule_from_config
from metalearn.config import (
    Config,
    ConfigError,
    DataConfig,
    LearnerConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    apply_overrides,
    config_changes,
    config_from_dict,
    suggest,
)
from metalearn.models import MLP, Conv4
from metalearn.tasks import Sine
from metalearn.tasks.batch import TaskSampler
from metalearn.training.checkpoint import load_checkpoint
from metalearn.training.distributed import cleanup, init_distributed
from metalearn.training.evaluate import Evaluation, evaluate
from metalearn.training.run_folder import claim_run_folder, remove_temporaries
from metalearn.training.trainer import CHECKPOINT_FILE, EvalProtocol, Trainer

__all__ = [
    "ENTRY_POINT_GROUPS",
    "MissingComponentError",
    "build_learner",
    "build_model",
    "build_task_sampler",
    "build_trainer",
    "check_config",
    "check_task_fit",
    "evaluate_checkpoint",
    "resolve_device",
    "run_experiment",
]

LOSSES = {"mse": F.mse_loss, "cross_entropy": F.cross_entropy}
MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "conv4": Conv4}
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}
SCHEDULERS = {
    "cosine": torch.optim.lr_scheduler.CosineAnnealingLR,
    "linear": torch.optim.lr_scheduler.LinearLR,
    "step": torch.optim.lr_scheduler.StepLR,
    "exponential": torch.optim.lr_scheduler.ExponentialLR,
}
#: Image datasets: config name -> class name in :mod:`metalearn.datasets`, channels, image side.
DATASETS = {"omniglot": ("Omniglot", 1, 28), "miniimagenet": ("MiniImagenet", 3, 84)}
#: The file written next to the checkpoints: the config the run was started with.
CONFIG_FILE = "config.yaml"


# -- looking up components: built-in names, entry points, package.module:Name -------------------
def _builtin_learners() -> dict[str, type[Learner]]:
    # Read from the package each time, so ``metalearn.MyLearner = MyLearner`` works too.
    return {
        name: obj
        for name in dir(metalearn)
        if isinstance(obj := getattr(metalearn, name), type)
        and issubclass(obj, Learner)
        and obj is not Learner
    }


def _of_kind(obj: Any, key: str, name: str, base: type, what: str) -> Any:
    """``obj`` when it is a subclass of ``base`` (publicly ``what``) or a function (a factory,
    whose result :func:`_built` checks)."""
    if isinstance(obj, type):
        if issubclass(obj, base) and obj is not base:
            return obj
        raise ConfigError(
            f"{key}: {name} is the class {obj.__module__}.{obj.__qualname__}, which is not a "
            f"{what}; name a subclass of {what} or a function returning an instance of one"
        )
    if callable(obj):
        return obj
    raise ConfigError(
        f"{key}: {name} is a {type(obj).__name__}, not a {what} or a function returning one"
    )


def _built(obj: Any, key: str, name: str, base: type, what: str) -> Any:
    if not isinstance(obj, base):
        raise ConfigError(f"{key}: {name} returned a {type(obj).__name__}, not a {what}")
    return obj


def learner_class(name: str) -> Callable[..., Learner]:
    """The learner class (or a function returning a learner) that ``learner.name`` names.

    ``name`` is a learner class of the ``metalearn`` package (``MAML``), ``package.module:Name``
    or the name of an entry point in ``metalearn.learners``.

    Raises:
        MissingComponentError: naming the learners available, or the module that cannot be
            imported.
        ConfigError: when the object named is not a :class:`~metalearn.Learner` (or a function).
    """
    builtins = _builtin_learners()
    group = ENTRY_POINT_GROUPS["learner"]
    known = name in builtins or name in entry_point_names([group])
    if not known and not is_import_spec(name):
        available = sorted(builtins)
        raise MissingComponentError(
            f"metalearn.{name}",
            f"; learner.name must be one of {available}, an entry point of {group}, or "
            f"package.module:Name for a learner of your own{suggest(name, available)}",
        )
    found = resolve(name, "learner.name", builtins, [group], "learner")
    return _of_kind(found, "learner.name", name, Learner, "metalearn.Learner")


def model_class(name: str) -> Callable[..., nn.Module]:
    """The model class (or a function returning a model) that ``model.name`` names."""
    found = resolve(name, "model.name", MODELS, [ENTRY_POINT_GROUPS["model"]], "model")
    return _of_kind(found, "model.name", name, nn.Module, "torch.nn.Module")


def loss_function(name: str) -> Callable[..., torch.Tensor]:
    """The loss function ``loss(prediction, target) -> scalar`` that ``learner.loss`` names."""
    found = resolve(name, "learner.loss", LOSSES, [ENTRY_POINT_GROUPS["loss"]], "loss")
    if isinstance(found, type) or not callable(found):
        what = f"the class {found.__qualname__}" if isinstance(found, type) else "not callable"
        raise ConfigError(
            f"learner.loss: {name} is {what}; a loss is a function "
            "loss(prediction, target) -> scalar tensor, e.g. torch.nn.functional:mse_loss"
        )
    return found


def data_source(name: str) -> tuple[str, type]:
    """What a plugin ``data.name`` names: ``("tasks", sampler class)`` for a task sampler (it has
    ``sample(num_tasks, generator)``), ``("dataset", class)`` for a class dataset that
    :class:`~metalearn.tasks.FewShot` draws tasks from (``num_classes``, ``class_sizes``,
    ``gather()``)."""
    groups = [ENTRY_POINT_GROUPS["tasks"], ENTRY_POINT_GROUPS["dataset"]]
    found = resolve(name, "data.name", {}, groups, "task source")
    if isinstance(found, type):
        if callable(getattr(found, "sample", None)):
            return "tasks", found
        if callable(getattr(found, "gather", None)) or callable(getattr(found, "images", None)):
            return "dataset", found
    raise ConfigError(
        f"data.name: {name} is neither a task sampler class (with a method "
        "sample(num_tasks, generator) -> TaskBatch) nor a class dataset (num_classes, "
        "class_sizes and a method gather(); see metalearn.datasets.ClassDataset)"
    )


def dataset_class(name: str) -> type:
    """The dataset class of an image-task config name (imported on first use)."""
    class_name = DATASETS[name][0]
    try:
        module = importlib.import_module("metalearn.datasets")
    except ModuleNotFoundError as e:
        raise MissingComponentError(f"metalearn.datasets.{class_name}", f" ({e})") from e
    cls = getattr(module, class_name, None)
    if cls is None:
        raise MissingComponentError(f"metalearn.datasets.{class_name}")
    return cls


def fewshot_class() -> type:
    cls = getattr(importlib.import_module("metalearn.tasks"), "FewShot", None)
    if cls is None:
        raise MissingComponentError("metalearn.tasks.FewShot")
    return cls


def _check_kwargs(
    path: str,
    target: Any,
    kwargs: dict[str, Any],
    reserved: Iterable[str] = (),
    section: type | None = None,
    *,
    passed: Iterable[str] = (),
    spec: str | None = None,
) -> None:
    """Every key of ``kwargs`` must be a keyword parameter of ``target`` (a class or function).

    ``reserved`` parameters are filled by the builder; those of them in ``passed`` are always
    passed by keyword, so ``target`` must take them. ``section`` is the config dataclass whose
    own keys are also offered as suggestions for a typo. ``spec`` is the config name of user
    code: messages then show it with its signature.
    """
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a callable without an inspectable signature
        return
    params = signature.parameters
    label = f"{spec}{signature}" if spec is not None else None
    # A **removed catch-all only turns retired keywords into errors that say what to write.
    if any(
        p.kind is inspect.Parameter.VAR_KEYWORD and p.name != "removed" for p in params.values()
    ):
        return
    takes = [
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    for key in passed:
        if key not in takes:
            raise ConfigError(
                f"{path}.name: {label or getattr(target, '__name__', target)} does not take the "
                f"keyword argument {key!r}; metalearn calls it with the keywords "
                f"{', '.join(passed)} and the section's other keys"
            )
    accepted = [
        n
        for n, p in params.items()
        if n not in ("self", *reserved) and p.kind is not inspect.Parameter.VAR_POSITIONAL
    ]
    schema = (
        [f.name for f in dataclasses.fields(section) if not f.metadata.get("extra")]
        if (section is not None)
        else []
    )
    name = label or getattr(target, "__name__", str(target))
    for key in kwargs:
        if key not in accepted:
            valid = [*schema, *accepted]
            raise ConfigError(
                f"{path}.{key}: unknown key{suggest(key, valid)} "
                f"({path} takes {', '.join(valid)}; extra keys go to {name})"
            )
    given = {*kwargs, *passed}
    # The builder fills a built-in's reserved parameters; user code must not need others.
    for key in accepted if spec is None else [n for n in params if n != "self"]:
        param = params[key]
        required = param.default is inspect.Parameter.empty and param.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )
        if required and key not in given:
            raise ConfigError(f"{path}.{key}: missing required key (for {name})")


def _model_kwargs(config: Config) -> dict[str, Any]:
    kwargs = dict(config.model.options)
    if config.model.name == "conv4" and config.data.name in DATASETS:
        _, channels, side = DATASETS[config.data.name]
        kwargs.setdefault("in_channels", channels)
        kwargs.setdefault("image_size", side)
        kwargs.setdefault("n_classes", config.data.n_way)
        if kwargs["n_classes"] != config.data.n_way:
            raise ConfigError(
                f"model.n_classes: {kwargs['n_classes']} classes but data.n_way is "
                f"{config.data.n_way}; the head must have one output per way"
            )
    return kwargs


def _scheduler_kwargs(config: Config) -> dict[str, Any]:
    assert config.scheduler is not None
    options = dict(config.scheduler.options)
    length = {"cosine": "T_max", "linear": "total_iters"}.get(config.scheduler.name)
    if length is not None:
        options.setdefault(length, config.train.iterations)  # the schedule spans the run
    return options


def check_config(config: Config) -> None:
    """Check what the schema cannot: constructor keywords, class names, model/data agreement.

    Every part that can be checked is checked, also when another part names a class that is
    missing, so a config's typos show up before its classes exist.

    Raises:
        ConfigError: naming the dotted key of a keyword the target class does not take.
        MissingComponentError: naming every class this installation does not have (yet).
    """
    missing: list[MissingComponentError] = []

    def attempt(check) -> None:
        try:
            check()
        except MissingComponentError as e:
            missing.append(e)

    model_name = config.model.name
    builtin_model = model_name in MODELS
    attempt(
        lambda: _check_kwargs(
            "model",
            model_class(model_name),
            _model_kwargs(config),
            ("activation",) if builtin_model else (),
            ModelConfig,
            spec=None if builtin_model else model_name,
        )
    )
    learner_keys = ("model", "loss", "inner_lr", "inner_steps")
    learner_name = config.learner.name
    _learner_kwargs(config.learner)
    attempt(
        lambda: _check_kwargs(
            "learner",
            learner_class(learner_name),
            config.learner.options,
            learner_keys,
            LearnerConfig,
            passed=learner_keys,
            spec=None if learner_name in _builtin_learners() else learner_name,
        )
    )
    attempt(lambda: loss_function(config.learner.loss))
    opt = config.optimizer
    _check_kwargs("optimizer", OPTIMIZERS[opt.name], opt.options, ("params", "lr"), OptimizerConfig)
    if config.scheduler is not None:
        _check_kwargs(
            "scheduler",
            SCHEDULERS[config.scheduler.name],
            _scheduler_kwargs(config),
            ("optimizer",),
            SchedulerConfig,
        )
    if config.data.name == "sine":
        _check_kwargs("data", Sine, config.data.options, ("k_shot", "k_query", "dtype"), DataConfig)
    elif config.data.name in DATASETS:
        attempt(
            lambda: _check_kwargs(
                "data",
                dataset_class(config.data.name),
                config.data.options,
                ("root", "split"),
                DataConfig,
            )
        )
        attempt(fewshot_class)
    else:
        attempt(lambda: _check_data_source(config.data))
    if len(missing) == 1:
        raise missing[0]
    if missing:
        raise MissingComponentError(
            ", ".join(e.component for e in missing), message="; ".join(str(e) for e in missing)
        )


def _check_data_source(data: DataConfig) -> None:
    kind, cls = data_source(data.name)
    if kind == "tasks":
        keys = ("k_shot", "k_query")
        _check_kwargs("data", cls, data.options, keys, DataConfig, passed=keys, spec=data.name)
        return
    if data.n_way is None:
        raise ConfigError(f"data.n_way: required for tasks drawn from the dataset {data.name}")
    passed = ("split",) if data.root is None else ("root", "split")
    _check_kwargs(
        "data", cls, data.options, ("root", "split"), DataConfig, passed=passed, spec=data.name
    )
    fewshot_class()


# -- building ------------------------------------------------------------------------------------
def build_task_sampler(config: Config, split: str = "train") -> TaskSampler:
    """The task sampler of ``split`` (``"train"``, ``"val"`` or ``"test"``).

    Validation and test samplers take their ``k_query`` from the ``validation``/``test``
    sections when given there (e.g. 100 query points per sine task at test).
    """
    data = config.data
    k_query = data.k_query
    section = {"val": config.validation, "test": config.test}.get(split)
    if section is not None and section.k_query is not None:
        k_query = section.k_query
    if data.name == "sine":
        return Sine(data.k_shot, k_query, **data.options)
    split_name = {"train": data.train_split, "val": data.val_split, "test": data.test_split}[split]
    if data.name in DATASETS:
        dataset = dataset_class(data.name)(data.root, split=split_name, **data.options)
    else:
        kind, cls = data_source(data.name)
        if kind == "tasks":  # like sine: one sampler per split, told only the shots
            return cls(k_shot=data.k_shot, k_query=k_query, **data.options)
        root = {} if data.root is None else {"root": data.root}
        dataset = cls(**root, split=split_name, **data.options)
    try:
        return fewshot_class()(dataset, n_way=data.n_way, k_shot=data.k_shot, k_query=k_query)
    except (TypeError, ValueError) as e:  # n_way or shots the split cannot supply
        where = data.root if data.root is not None else data.name
        raise ConfigError(f"data (the {split_name!r} split of {where}): {e}") from e


def build_model(config: Config) -> nn.Module:
    """The network named by ``model.name`` with its keyword arguments."""
    name = config.model.name
    model = model_class(name)(**_model_kwargs(config))
    return _built(model, "model.name", name, nn.Module, "torch.nn.Module")


def build_learner(config: Config) -> Learner:
    """The learner ``learner.name`` names, called with the keywords ``model``, ``loss``,
    ``inner_lr``, ``inner_steps`` and the section's other keys."""
    lc = config.learner
    learner = learner_class(lc.name)(
        model=build_model(config),
        loss=loss_function(lc.loss),
        inner_lr=lc.inner_lr,
        inner_steps=lc.inner_steps,
        **_learner_kwargs(lc),
    )
    return _built(learner, "learner.name", lc.name, Learner, "metalearn.Learner")


def _learner_kwargs(lc: LearnerConfig) -> dict[str, Any]:
    # learner.update is an update rule in its config form ({name: adam, lr: ...}).
    options = dict(lc.options)
    if "update" in options:
        try:
            options["update"] = rule_from_config(options["update"])
        except ValueError as error:
            raise ConfigError(f"learner.update: {error}") from None
    return options


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"device: {name!r} is not a torch device ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} was asked for but CUDA is not available here")
    return device


def build_trainer(
    config: Config,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
    progress: bool = True,
) -> Trainer:
    """Build the learner (seeded with ``config.seed``), optimizer, samplers and the trainer."""
    check_config(config)
    torch_device = resolve_device(device or config.device)
    torch.manual_seed(config.seed)
    learner = build_learner(config).to(torch_device)
    if config.train.compile:
        learner.compile(mode=config.train.compile_mode)
    opt = config.optimizer
    optimizer = OPTIMIZERS[opt.name](learner.parameters(), lr=opt.lr, **opt.options)
    scheduler = None
    if config.scheduler is not None:
        scheduler = SCHEDULERS[config.scheduler.name](optimizer, **_scheduler_kwargs(config))
    validation = test = None
    val = config.validation
    if val is not None:
        validation = EvalProtocol(
            build_task_sampler(config, "val"), val.num_tasks, val.steps, val.seed, val.batch_size
        )
    if config.test is not None:
        t = config.test
        test = EvalProtocol(
            build_task_sampler(config, "test"), t.num_tasks, t.steps, t.seed, t.batch_size
        )
    train = config.train
    return Trainer(
        learner,
        build_task_sampler(config, "train"),
        optimizer,
        iterations=train.iterations,
        meta_batch_size=train.meta_batch_size,
        seed=config.seed,
        scheduler=scheduler,
        grad_clip=train.grad_clip,
        amp=train.amp,
        amp_dtype=getattr(torch, train.amp_dtype),
        validation=validation,
        validate_every=val.every if val is not None else train.iterations,
        select_metric=val.metric if val is not None else None,
        test=test,
        run_dir=run_dir,
        checkpoint_every=train.checkpoint_every,
        plot=train.plot,
        tensorboard=train.tensorboard,
        tune_allocator=train.tune_allocator,
        chunk_size=train.chunk_size,
        progress=progress,
        # The rank-invariant task stream, also in one process: a config gives the same run
        # whether launched plainly or with torchrun on any number of ranks.
        distributed=True,
        metadata={"config": config.to_dict()},
    )


def check_task_fit(config: Config, learner: Learner, sampler: TaskSampler) -> None:
    """Check on one task that the model and loss fit the data, before anything is written.

    A classification loss on real-valued targets (``cross_entropy`` on sine: a loss of exactly
    zero with one output), a regression loss on class labels, or a model whose input or output
    size does not match the task would otherwise train silently on nonsense or fail deep inside
    the first step.

    Raises:
        ConfigError: naming the key to change (``learner.loss``, ``model...``).
    """
    with torch.random.fork_rng(devices=[]):  # the run's random streams are not touched
        task = sampler.sample(1, generator=torch.Generator().manual_seed(0)).task(0)
    x, y = task.support
    classes = not y.is_floating_point()
    loss = config.learner.loss
    if loss == "cross_entropy" and not classes:
        raise ConfigError(
            f"learner.loss: cross_entropy needs class labels, but the {config.data.name} tasks "
            f"have real-valued targets; use loss: mse"
        )
    if loss == "mse" and classes:
        raise ConfigError(
            f"learner.loss: mse needs real-valued targets, but the {config.data.name} tasks have "
            "class labels; use loss: cross_entropy"
        )
    first = next(learner.parameters())
    try:
        with torch.no_grad():
            # Through the learner: CAVIA's model takes the input and the context together.
            out = learner.model_forward(
                learner.params(), x.to(device=first.device, dtype=first.dtype)
            )
    except (RuntimeError, ValueError) as e:
        raise ConfigError(
            f"model: the {config.model.name} model does not take the {config.data.name} tasks' "
            f"inputs of shape {tuple(x.shape[1:])} ({_first_line(e)}); change its input size"
        ) from e
    if classes:
        needed = int(config.data.n_way or int(y.max()) + 1)
        if out.dim() != 2 or out.shape[-1] != needed:
            raise ConfigError(
                f"model: the {config.model.name} model gives outputs of shape "
                f"{tuple(out.shape[1:])} but the tasks have {needed} classes; it needs "
                f"{needed} outputs"
            )
    elif out.shape != y.shape:
        raise ConfigError(
            f"model: the {config.model.name} model gives outputs of shape {tuple(out.shape[1:])} "
            f"but the {config.data.name} targets have shape {tuple(y.shape[1:])}; change its "
            "output size"
        )


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _read_resume_state(
    checkpoint: Path, config: Config, allow_changes: Sequence[str]
) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """The checkpoint to resume and the allowed changes of ``config`` against its config.

    Raises:
        ConfigError: when the configs differ in keys not allowed, naming them.
    """
    state = load_checkpoint(checkpoint)
    stored = state.get("metadata", {}).get("config") if isinstance(state, dict) else None
    if not isinstance(stored, dict):
        raise ConfigError(
            f"{checkpoint} holds no config (it was not written by `metalearn train`); it "
            "cannot be checked against this config, so it is not resumed"
        )
    changes = config_changes(stored, config.to_dict())
    refused = {
        k: v
        for k, v in changes.items()
        if not any(k == a or k.startswith(a + ".") for a in allow_changes)
    }
    if refused:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ConfigError(
            f"--resume: the config differs from the one {checkpoint} was trained with ({listed}); "
            f"restore those values, start a new --run-dir, or accept the change with "
            f"--allow-changes {' '.join(refused)}"
        )
    return state, changes


def _describe_changes(changes: dict[str, tuple[Any, Any]], iteration: int) -> str:
    return "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items()) + (
        f" (from iteration {iteration})"
    )


def _config_text(config: Config, history: Sequence[str] = ()) -> str:
    import yaml

    header = "".join(f"# resumed with changes: {line}\n" for line in history)
    return header + yaml.safe_dump(config.to_dict(), sort_keys=False)


def run_experiment(
    config: Config,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    allow_changes: Sequence[str] = (),
) -> Trainer:
    """Train as ``config`` says, writing everything to ``run_dir``; return the finished trainer.

    Nothing is written before every check has passed: the config, the model and loss against
    one task (:func:`check_task_fit`), the run folder, and on resume the checkpoint.

    The run folder is locked while the run owns it (a second run in it is refused). A fresh run
    needs a new or empty folder, or one holding only files of an earlier start of the same
    config that wrote no checkpoint yet; a folder with a checkpoint is refused unless
    ``resume=True``. With ``resume=True`` the run continues from ``run_dir/checkpoint.pt``
    (and starts fresh when there is none yet); the config must equal the checkpoint's except for
    keys that do not change what is trained (:data:`metalearn.config.RESUMABLE_CHANGES`) and
    the keys or sections listed in ``allow_changes``. A changed ``optimizer`` or ``scheduler``
    section starts that part afresh; every accepted change is recorded in the checkpoint's
    metadata (``"changes"``) and at the top of ``config.yaml``.

    Raises:
        ConfigError: for a config that does not fit the task, or differs from the resumed one.
        RunFolderError: for a folder in use or holding files no run wrote.
        FileExistsError: for a folder holding a run, without ``resume``.
    """
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT_FILE
    if checkpoint.exists() and not resume:
        raise FileExistsError(
            f"{run_dir} already holds a run ({checkpoint}); pass --resume to continue it or "
            "choose another --run-dir"
        )
    # Under torchrun this joins the process group (gloo on CPU, NCCL on CUDA, one GPU per
    # rank); launched plainly it starts nothing and the run is a single process.
    info = init_distributed()
    try:
        if info.world_size > 1 and info.device.type == "cuda":
            device = str(info.device)
        trainer = build_trainer(config, run_dir=run_dir, device=device, progress=progress)
        check_task_fit(config, trainer.learner, trainer.sampler)
        lock = claim_run_folder(run_dir) if info.is_main else contextlib.nullcontext(run_dir)
        with lock:
            if info.is_main:
                remove_temporaries(run_dir)  # left by killed writes; the lock makes it safe
            history: list[str] = []
            if checkpoint.exists():  # resume=True, as checked above
                state, changes = _read_resume_state(checkpoint, config, allow_changes)
                history = list(state.get("metadata", {}).get("changes", []))
                if changes:
                    history.append(_describe_changes(changes, int(state.get("iteration", 0))))
                    trainer.metadata["changes"] = history
                trainer.resume_from_state(
                    state,
                    checkpoint,
                    optimizer="optimizer" not in {k.split(".")[0] for k in changes},
                    scheduler="scheduler" not in {k.split(".")[0] for k in changes},
                )
            elif info.is_main:
                _check_fresh_folder(run_dir, config, resume)
            if info.is_main:
                (run_dir / CONFIG_FILE).write_text(_config_text(config, history))
            trainer.fit()
    finally:
        cleanup()
    return trainer


def _check_fresh_folder(run_dir: Path, config: Config, resume: bool) -> None:
    """A fresh run may only replace files of an earlier start of the same config."""
    present = sorted(p.name for p in run_dir.iterdir() if p.name != ".metalearn.lock")
    if not present:
        return
    written = run_dir / CONFIG_FILE
    same = written.is_file() and written.read_text(encoding="utf-8") == _config_text(config)
    if not same:
        whose = "its config.yaml is not this config" if written.is_file() else "no config.yaml"
        raise FileExistsError(
            f"{run_dir} holds files this run did not write ({', '.join(present)}; {whose}); "
            "choose another --run-dir"
        )
    if not resume:
        raise FileExistsError(
            f"{run_dir} holds an earlier start of this run without a checkpoint "
            f"({', '.join(present)}); pass --resume to start it over or choose another --run-dir"
        )


def evaluate_checkpoint(
    path: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    num_tasks: int | None = None,
    steps: Sequence[int] | None = None,
    seed: int | None = None,
    split: str = "test",
    device: str | None = None,
) -> tuple[Evaluation, Config]:
    """Evaluate a saved learner on the fixed test (or validation) task set of its config.

    Args:
        path: ``checkpoint.pt`` (the latest state), ``best.pt`` (the best validated state), or a
            run folder (its ``best.pt``).
        overrides: ``key=value`` changes to the stored config (e.g. ``data.root=/data``).
        num_tasks: test tasks (default: the config's ``test`` section, else 600).
        steps: inner step counts to report (default: the config's).
        seed: seed of the task set (default: the config's).
        split: ``"test"`` or ``"val"``.
        device: where to evaluate (default: the config's device).

    Returns:
        The :class:`Evaluation` and the config used.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    state = load_checkpoint(path)
    stored = state.get("metadata", {}).get("config")
    if stored is None:
        raise ValueError(f"{path} holds no config (it was not written by `metalearn train`)")
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    try:
        config = config_from_dict(apply_overrides(stored, overrides))
        check_config(config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if "learner" not in state:
        raise ValueError(f"{path} holds no learner state; it is not a metalearn checkpoint")
    learner = build_learner(config)
    try:
        learner.load_state_dict(state["learner"])
    except RuntimeError as e:
        raise ValueError(
            f"{path}: the stored learner state does not fit the config's learner "
            f"({_first_line(e)}); undo the --override that changed the model or learner"
        ) from None
    learner.to(resolve_device(device or config.device))
    section = config.test if split == "test" else config.validation
    protocol_steps: Any = steps
    if protocol_steps is None and section is not None:
        protocol_steps = section.steps
    result = evaluate(
        learner.eval(),
        build_task_sampler(config, split),
        num_tasks=num_tasks if num_tasks is not None else (section.num_tasks if section else 600),
        steps=protocol_steps,
        seed=seed if seed is not None else (section.seed if section is not None else 2),
        batch_size=section.batch_size if section is not None else 25,
    )
    return result, config
