"""User code in configs: ``package.module:Name``, entry points, and the CLI in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import metalearn as ml
from metalearn.cli import main
from metalearn.config import ConfigError, apply_overrides, config_from_dict
from metalearn.training import load_checkpoint
from metalearn.training.experiment import (
    MissingComponentError,
    build_learner,
    build_model,
    build_task_sampler,
    check_config,
)

MODULE = "mylab_plugins"

# A lab's own code, outside metalearn: imported from a folder on the path, as a user's would be.
PLUGIN_SOURCE = '''
"""A lab's learner, model, loss and task sampler."""

import torch
import torch.nn.functional as F
from torch import nn

import metalearn as ml


class Net(nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.body(x)


class CountingMAML(ml.MAML):
    """MAML that counts the meta-batches it trained on, in its state (a buffer)."""

    def __init__(self, model, loss, inner_lr, inner_steps=1, *, pull=0.0, vectorize="auto"):
        super().__init__(model, loss, inner_lr, inner_steps, vectorize=vectorize)
        self.pull = pull
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def forward(self, batch):
        if torch.is_grad_enabled():
            self.batches_seen += 1
        return super().forward(batch)


class Outer:
    class Inner(CountingMAML):
        pass


class NoLoss(ml.Learner):
    def __init__(self, model, inner_lr, inner_steps=1):
        super().__init__(model, F.mse_loss, inner_lr, inner_steps)


def small_maml(model, loss, inner_lr, inner_steps, **options):
    return ml.MAML(model, loss, inner_lr, inner_steps, **options)


def not_a_learner(model, loss, inner_lr, inner_steps, **options):
    return model


def half_mse(prediction, target):
    return 0.5 * F.mse_loss(prediction, target)


class Blobs:
    """A class dataset: random 4x4 grey images, 5 per class, a different draw per split."""

    def __init__(self, split: str = "train", classes: int = 6) -> None:
        seed = {"train": 0, "val": 1, "test": 2}[split]
        draw = torch.Generator().manual_seed(seed)
        pixels = torch.randint(0, 256, (classes * 5, 4, 4), generator=draw)
        rows = [range(c * 5, c * 5 + 5) for c in range(classes)]
        names = [f"{split}{c}" for c in range(classes)]
        self.images = ml.datasets.ImageClasses(pixels.to(torch.uint8).numpy(), rows, names)
        self.num_classes, self.class_sizes = self.images.num_classes, self.images.class_sizes

    def gather(self, classes, indices):
        return self.images.gather(classes, indices)


class Lines:
    """Tasks y = a x + b, a and b uniform in [-1, 1]."""

    def __init__(self, k_shot: int, k_query: int, noise: float = 0.0) -> None:
        self.k_shot, self.k_query, self.noise = k_shot, k_query, noise

    def sample(self, num_tasks, generator=None):
        x = torch.rand(num_tasks, self.k_shot + self.k_query, 1, generator=generator) * 2 - 1
        a, b = (torch.rand(num_tasks, 1, 1, generator=generator) * 2 - 1 for _ in range(2))
        y = a * x + b + self.noise * torch.randn(x.shape, generator=generator)
        k = self.k_shot
        return ml.tasks.TaskBatch.from_tensors(x[:, :k], y[:, :k], x[:, k:], y[:, k:])
'''


def write_distribution(site: Path, name: str, entry_points: str) -> None:
    """An installed package as importlib.metadata sees it: ``<name>-0.1.dist-info``."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def lab(tmp_path) -> dict[str, Path]:
    """The lab's module in ``code/`` and its distribution (entry points) in ``site/``."""
    code, site = tmp_path / "code", tmp_path / "site"
    code.mkdir()
    (code / f"{MODULE}.py").write_text(PLUGIN_SOURCE)
    (code / "mylab_broken.py").write_text("raise RuntimeError('the lab module is broken')\n")
    write_distribution(
        site,
        "mylab",
        f"""
        [metalearn.learners]
        counting = {MODULE}:CountingMAML
        [metalearn.models]
        lab-net = {MODULE}:Net
        [metalearn.losses]
        half-mse = {MODULE}:half_mse
        [metalearn.tasks]
        lines = {MODULE}:Lines
        """,
    )
    yield {"code": code, "site": site}
    for name in (MODULE, "mylab_broken"):
        sys.modules.pop(name, None)


@pytest.fixture
def on_path(lab, monkeypatch) -> dict[str, Path]:
    """The lab's code and distribution importable in this process."""
    monkeypatch.syspath_prepend(str(lab["site"]))
    monkeypatch.syspath_prepend(str(lab["code"]))
    return lab


def lab_config(**changes):
    data = {
        "data": {"name": f"{MODULE}:Lines", "k_shot": 5, "k_query": 5},
        "model": {"name": f"{MODULE}:Net", "hidden": 4},
        "learner": {
            "name": f"{MODULE}:CountingMAML",
            "loss": f"{MODULE}:half_mse",
            "inner_lr": 0.1,
            "vectorize": "loop",
        },
        "train": {"iterations": 4, "meta_batch_size": 2},
    }
    return config_from_dict(apply_overrides(data, [f"{k}={v}" for k, v in changes.items()]))


def test_import_paths_name_a_learner_model_loss_and_task_sampler(on_path):
    config = lab_config(**{"learner.pull": 0.5})
    check_config(config)
    learner = build_learner(config)
    module = sys.modules[MODULE]
    assert type(learner) is module.CountingMAML and learner.pull == 0.5
    assert type(learner.model) is module.Net and learner.model.body[0].out_features == 4
    assert learner.loss is module.half_mse
    tasks = build_task_sampler(config, "train")
    assert isinstance(tasks, module.Lines) and tasks.k_shot == 5
    out = learner(tasks.sample(2, generator=torch.Generator().manual_seed(0)))
    assert out.loss.isfinite() and int(learner.batches_seen) == 1
    # A nested class, a factory function, and built-ins next to user code.
    nested = lab_config(**{"learner.name": f"{MODULE}:Outer.Inner"})
    assert type(build_learner(nested)) is module.Outer.Inner
    factory = lab_config(**{"learner.name": f"{MODULE}:small_maml", "learner.loss": "mse"})
    check_config(factory)
    assert type(build_learner(factory)) is ml.MAML
    builtin = lab_config(**{"model": "{name: mlp, sizes: [1, 4, 1]}", "learner.name": "FOMAML"})
    assert type(build_learner(builtin)) is ml.FOMAML
    linear = lab_config(**{"model": "{name: 'torch.nn:Linear', in_features: 1, out_features: 1}"})
    assert type(build_model(linear)) is torch.nn.Linear


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        (
            {"learner.name": "nosuch_lab.learners:MyLearner"},
            MissingComponentError,
            r"learner\.name: cannot import module 'nosuch_lab\.learners' of "
            r"'nosuch_lab\.learners:MyLearner' \(ModuleNotFoundError: No module named "
            r"'nosuch_lab'\); it must be importable: add its folder to PYTHONPATH or install",
        ),
        (
            {"model.name": "mylab_broken:Net"},
            MissingComponentError,
            r"model\.name: cannot import module 'mylab_broken'.*RuntimeError: the lab module is "
            r"broken\); fix the module 'mylab_broken'",
        ),
        (
            {"learner.name": f"{MODULE}:CountingMAM"},
            MissingComponentError,
            rf"learner\.name: {MODULE} has no attribute 'CountingMAM' "
            r".*did you mean CountingMAML\?",
        ),
        (
            {"learner.name": f"{MODULE}:Outer.Innr"},
            MissingComponentError,
            rf"{MODULE}:Outer has no attribute 'Innr'.*did you mean Inner\?",
        ),
        (
            {"learner.name": f"{MODULE}:Net"},
            ConfigError,
            rf"learner\.name: {MODULE}:Net is the class {MODULE}\.Net, which is not a "
            r"metalearn\.Learner; name a subclass of metalearn\.Learner or a function",
        ),
        (
            {"model.name": f"{MODULE}:Lines"},
            ConfigError,
            r"model\.name: .*which is not a torch\.nn\.Module; name a subclass of "
            r"torch\.nn\.Module or a function",
        ),
        (
            {"learner.loss": f"{MODULE}:Net"},
            ConfigError,
            r"learner\.loss: .* is the class Net; a loss is a function loss\(prediction, target\)",
        ),
        (
            {"data.name": f"{MODULE}:Net"},
            ConfigError,
            r"data\.name: .* is neither a task sampler class .* nor a class dataset",
        ),
        (
            {"learner.pul": 0.1},
            ConfigError,
            rf"learner\.pul: unknown key; did you mean pull\? .*extra keys go to "
            rf"{MODULE}:CountingMAML\(model, loss, inner_lr, inner_steps=1, \*, pull=0\.0,",
        ),
        (
            {"learner.name": f"{MODULE}:NoLoss"},
            ConfigError,
            r"learner\.name: .*NoLoss\(model, inner_lr, inner_steps=1\) does not take the keyword "
            r"argument 'loss'; metalearn calls it with the keywords model, loss, inner_lr",
        ),
        (
            {"data.noize": 0.1},
            ConfigError,
            r"data\.noize: unknown key; did you mean noise\?",
        ),
    ],
)
def test_user_code_errors_name_the_fix(on_path, changes, error, message):
    with pytest.raises(error, match=message):
        check_config(lab_config(**changes))


def test_a_class_dataset_gives_few_shot_tasks(on_path):
    config = lab_config(
        **{"data": f"{{name: '{MODULE}:Blobs', n_way: 3, k_shot: 1, k_query: 2, classes: 4}}"}
    )
    check_config(config)
    batch = build_task_sampler(config, "test").sample(2)
    assert batch.support.x.shape == (2, 3, 1, 4, 4) and batch.query.y.shape == (2, 6)
    assert sorted(batch.support.y[0].tolist()) == [0, 1, 2]
    with pytest.raises(
        ConfigError, match=r"data\.n_way: required for tasks drawn from the dataset"
    ):
        check_config(lab_config(**{"data.name": f"{MODULE}:Blobs"}))
    # A dataset that takes no root is told none; given one, the message says it takes none.
    with pytest.raises(ConfigError, match=r"Blobs\(split: .*does not take the keyword .*'root'"):
        check_config(
            lab_config(**{"data.name": f"{MODULE}:Blobs", "data.n_way": 3, "data.root": "/x"})
        )


def test_a_factory_must_return_a_learner(on_path):
    config = lab_config(**{"learner.name": f"{MODULE}:not_a_learner"})
    check_config(config)
    with pytest.raises(
        ConfigError, match=r"not_a_learner returned a Net, not a metalearn\.Learner"
    ):
        build_learner(config)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"learner.loss": f"{MODULE}:half-mse"}, r"learner\.loss: '.*:half-mse' is not package"),
        ({"model.name": "my lab:Net"}, r"model\.name: 'my lab:Net' is not package\.module:Name"),
        (
            {"learner.loss": "mse_loss"},
            r"learner\.loss: must be one of \['mse', 'cross_entropy'\], an entry point of "
            r"metalearn\.losses, or package\.module:Name .*got 'mse_loss'$",
        ),
        ({"data.name": "sinee"}, r"data\.name: .*metalearn\.tasks or metalearn\.datasets.*sine\?"),
    ],
)
def test_malformed_and_unknown_names_fail_when_read(changes, message):
    with pytest.raises(ConfigError, match=message):
        lab_config(**changes)


def test_unknown_learner_names_the_ways_to_name_one():
    with pytest.raises(MissingComponentError) as info:
        check_config(
            lab_config(**{"learner.name": "IMAMLL", "model": "{name: mlp, sizes: [1, 1]}"})
        )
    message = str(info.value)
    assert "did you mean IMAML?" in message
    assert "an entry point of metalearn.learners, or package.module:Name" in message


def test_entry_points_work_like_built_in_names(on_path):
    config = lab_config(
        **{
            "data.name": "lines",
            "model.name": "lab-net",
            "learner.name": "counting",
            "learner.loss": "half-mse",
        }
    )
    check_config(config)
    learner = build_learner(config)
    module = sys.modules[MODULE]
    assert type(learner) is module.CountingMAML and type(learner.model) is module.Net
    assert learner.loss is module.half_mse
    assert isinstance(build_task_sampler(config), module.Lines)
    # An unknown name lists the installed ones.
    with pytest.raises(ConfigError, match=r"installed: \['lab-net'\].*did you mean lab-net\?"):
        lab_config(**{"model.name": "lab-nett"})


def test_a_built_in_name_wins_over_an_entry_point_with_a_warning(on_path):
    write_distribution(
        on_path["site"],
        "shadowing",
        f"""
        [metalearn.learners]
        MAML = {MODULE}:CountingMAML
        [metalearn.losses]
        mse = {MODULE}:half_mse
        """,
    )
    config = lab_config(**{"learner.name": "MAML", "learner.loss": "mse"})
    with pytest.warns(UserWarning) as caught:
        learner = build_learner(config)
    assert type(learner) is ml.MAML and learner.loss is torch.nn.functional.mse_loss
    text = " ".join(str(w.message) for w in caught)
    assert "learner.name: 'MAML' is a built-in learner; the entry point 'MAML' of " in text
    assert f"metalearn.learners ({MODULE}:CountingMAML from shadowing 0.1) is ignored" in text
    assert "learner.loss: 'mse' is a built-in loss" in text
    with warnings.catch_warnings():  # without a clash, no warning
        warnings.simplefilter("error")
        build_learner(lab_config(**{"learner.name": "FOMAML"}))


def test_a_name_two_packages_register_is_an_error(on_path):
    write_distribution(
        on_path["site"], "otherlab", "[metalearn.models]\nlab-net = torch.nn:Linear\n"
    )
    with pytest.raises(ConfigError) as info:
        check_config(lab_config(**{"model.name": "lab-net"}))
    message = str(info.value)
    assert "model.name: 'lab-net' is registered by more than one installed package" in message
    assert f"{MODULE}:Net from mylab 0.1" in message and "torch.nn:Linear from otherlab" in message
    assert "write the one you mean as package.module:Name" in message


# -- the command line, in fresh processes ------------------------------------------------------
LAB_CONFIG = f"""\
seed: 0
device: cpu
data: {{name: "{MODULE}:Lines", k_shot: 5, k_query: 5, noise: 0.01}}
model: {{name: lab-net, hidden: 8}}
learner:
  name: "{MODULE}:CountingMAML"
  loss: "{MODULE}:half_mse"
  inner_lr: 0.1
  vectorize: loop
train: {{iterations: 6, meta_batch_size: 2, checkpoint_every: 3, plot: false, tensorboard: false}}
validation: {{every: 3, num_tasks: 4}}
test: {{num_tasks: 4, steps: [0, 1]}}
"""


def metalearn_command(*args: str, path: list[Path]) -> subprocess.CompletedProcess:
    """``python -m metalearn ARGS`` in a new process importing this checkout's metalearn."""
    checkout = Path(ml.__file__).resolve().parents[1]
    entries = [*map(str, path), str(checkout), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(e for e in entries if e)}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "metalearn", *args], capture_output=True, text=True, env=env
    )


def test_user_code_trains_evaluates_and_resumes_through_the_cli(lab, tmp_path, capsys):
    config, run = tmp_path / "lab.yaml", tmp_path / "run"
    config.write_text(LAB_CONFIG)
    path = [lab["code"], lab["site"]]
    trained = metalearn_command(
        "train", str(config), "--run-dir", str(run), "--no-progress", path=path
    )
    assert trained.returncode == 0, trained.stderr
    recorded = (run / "config.yaml").read_text()
    assert f"name: {MODULE}:CountingMAML" in recorded and "name: lab-net" in recorded
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["iteration"] == 6 and int(state["learner"]["batches_seen"]) == 6

    evaluated = metalearn_command("evaluate", str(run), "--num-tasks", "3", path=path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.startswith("3 tasks") and "loss" in evaluated.stdout

    args = ["train", str(config), "--run-dir", str(run), "--no-progress", "--resume"]
    resumed = metalearn_command(*args, "-o", "train.iterations=9", path=path)
    assert resumed.returncode == 0, resumed.stderr
    state = load_checkpoint(run / "checkpoint.pt")
    # The user's learner state came back from the checkpoint: it counts on from 6.
    assert state["iteration"] == 9 and int(state["learner"]["batches_seen"]) == 9

    # Where the lab's code cannot be imported, evaluate says which module and how to fix it.
    sys.path.insert(0, str(lab["site"]))  # the package is "installed", its module is not there
    try:
        assert main(["evaluate", str(run)]) == 2
    finally:
        sys.path.remove(str(lab["site"]))
    err = capsys.readouterr().err
    assert f"cannot import module '{MODULE}'" in err and "add its folder to PYTHONPATH" in err
    assert main(["evaluate", str(run)]) == 2  # nor is the package installed
    err = capsys.readouterr().err
    assert "model.name: must be one of ['mlp', 'conv4'], an entry point of" in err
    assert "got 'lab-net'" in err
