"""The config schema: every shipped config validates; bad keys and values are named."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

import metalearn as ml
from metalearn.config import Config, ConfigError, apply_overrides, config_from_dict, load_config
from metalearn.training.experiment import (
    MissingComponentError,
    build_task_sampler,
    build_trainer,
    check_config,
)

# Configs of example scripts (their own schema, checked by the scripts): not `metalearn train`'s.
EXAMPLE_CONFIGS = {"omniglot_minimal", "tox21"}
CONFIGS = sorted(
    p
    for p in (Path(__file__).parents[1] / "configs").rglob("*.yaml")
    if p.parent.name not in EXAMPLE_CONFIGS
)
SINE = Path(__file__).parents[1] / "configs" / "sine" / "maml.yaml"


def minimal(**changes):
    data = {
        "data": {"name": "sine", "k_shot": 5, "k_query": 5},
        "model": {"name": "mlp", "sizes": [1, 8, 1]},
        "learner": {"name": "MAML", "inner_lr": 0.01},
        "train": {"iterations": 10, "meta_batch_size": 2},
    }
    return apply_overrides(data, [f"{k}={v}" for k, v in changes.items()])


def test_configs_exist_for_every_protocol():
    names = {str(p.relative_to(p.parents[1])) for p in CONFIGS}
    for learner in ("maml", "fomaml", "reptile", "anil", "metasgd", "mamlpp", "pretrain"):
        assert f"sine/{learner}.yaml" in names
    for stem in ("maml_5way_1shot", "maml_5way_5shot", "maml_20way_1shot", "maml_20way_5shot"):
        assert f"omniglot/{stem}.yaml" in names
    for stem in ("maml_5way_1shot", "maml_5way_5shot", "fomaml_5way_1shot", "anil_5way_1shot"):
        assert f"miniimagenet/{stem}.yaml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_validates(path):
    config = load_config(path)
    assert config_from_dict(config.to_dict()) == config  # round trip through plain data
    check_config(config)  # every learner, model, dataset and keyword exists


def test_train_tune_allocator_reaches_the_trainer(monkeypatch):
    import metalearn.training.trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "tune_cpu_allocator", lambda: calls.append(1) or True)
    config = load_config(SINE.parent / "maml.yaml")
    config.train.tune_allocator = False
    build_trainer(config, device="cpu", progress=False)
    assert calls == []
    config.train.tune_allocator = True
    build_trainer(config, device="cpu", progress=False)
    assert calls == [1]


def test_train_chunk_size_reaches_the_trainer():
    config = load_config(SINE.parent / "maml.yaml")
    assert build_trainer(config, device="cpu", progress=False).chunk_size is None
    config.train.chunk_size = 5
    assert build_trainer(config, device="cpu", progress=False).chunk_size == 5
    bad = config.to_dict()
    bad["train"]["chunk_size"] = 0
    with pytest.raises(ConfigError, match="chunk_size"):
        config_from_dict(bad)


@pytest.mark.parametrize("stem", ["maml", "fomaml", "pretrain"])
def test_sine_configs_build_the_paper_setup(stem):
    config = load_config(SINE.parent / f"{stem}.yaml")
    trainer = build_trainer(config, device="cpu", progress=False)
    assert type(trainer.learner).__name__ == {"maml": "MAML", "fomaml": "FOMAML"}.get(
        stem, "Pretrain"
    )
    assert [
        m.out_features for m in trainer.learner.model.modules() if hasattr(m, "out_features")
    ] == [
        40,
        40,
        1,
    ]
    assert trainer.learner.inner_lr == 0.01 and trainer.learner.inner_steps == 1
    assert trainer.meta_batch_size == 25 and trainer.iterations == 70000
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3
    assert trainer.test.num_tasks == 600 and list(trainer.test.steps) == [0, 1, 10]
    assert trainer.test.sampler.k_query == 100


def test_image_configs_follow_finn_et_al():
    mini1 = load_config("configs/miniimagenet/maml_5way_1shot.yaml")
    mini5 = load_config("configs/miniimagenet/maml_5way_5shot.yaml")
    for config, batch in ((mini1, 4), (mini5, 2)):
        assert config.train.meta_batch_size == batch and config.train.iterations == 60000
        assert (config.learner.inner_steps, config.learner.inner_lr) == (5, 0.01)
        assert config.test.steps[-1] == 10 and config.data.k_query == 15
        assert config.model.options["hidden"] == 32
        assert (config.optimizer.name, config.optimizer.lr) == ("adam", 1e-3)
    omni5 = load_config("configs/omniglot/maml_5way_1shot.yaml")
    omni20 = load_config("configs/omniglot/maml_20way_1shot.yaml")
    assert (omni5.train.meta_batch_size, omni5.learner.inner_steps, omni5.learner.inner_lr) == (
        32,
        1,
        0.4,
    )
    assert (omni20.train.meta_batch_size, omni20.learner.inner_steps, omni20.learner.inner_lr) == (
        16,
        5,
        0.1,
    )
    assert omni5.model.options["hidden"] == omni20.model.options["hidden"] == 64


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trian.iterations": 3}, "trian: unknown key; did you mean train?"),
        ({"train.iteratons": 3}, "train.iteratons: unknown key; did you mean iterations?"),
        ({"train.iterations": 0}, "train.iterations: must be > 0, got 0"),
        ({"train.iterations": "many"}, "train.iterations: must be an integer, got 'many'"),
        ({"train.iterations": "true"}, "train.iterations: must be an integer, got True"),
        ({"train.amp": "yes please"}, "train.amp: must be true or false"),
        ({"learner.inner_lr": -1}, "learner.inner_lr: must be >= 0"),
        ({"learner.inner_lr": ".inf"}, "learner.inner_lr: must be a finite number"),
        ({"learner.loss": "mse_loss"}, "learner.loss: must be one of ['mse', 'cross_entropy']"),
        (
            {"optimizer.name": "adm"},
            "optimizer.name: must be one of ['adam', 'adamw', 'sgd'], "
            "got 'adm'; did you mean adam?",
        ),
        ({"test.steps": "[1, -2]"}, "test.steps: must all be >= 0"),
        ({"test.steps": "[1, x]"}, "test.steps[1]: must be an integer"),
        ({"data.name": "omniglot", "data.n_way": 5}, "data.root: required for omniglot tasks"),
        ({"validation": "[]"}, "validation: expected a mapping of keys, got list"),
        ({"train.compile_mode": "fast"}, "train.compile_mode: must be one of ['default',"),
        (
            {"train.compile": "true", "train.amp": "true"},
            "train.compile: a compiled learner cannot run under AMP",
        ),
    ],
)
def test_bad_keys_and_values_are_named(changes, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(minimal(**changes))
    assert message in str(info.value)


def test_missing_required_key_is_named():
    data = minimal()
    del data["learner"]["inner_lr"]
    with pytest.raises(ConfigError, match=r"learner\.inner_lr: missing required key"):
        config_from_dict(data)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"learner.inner_lrr": 0.1}, "learner.inner_lrr: unknown key; did you mean inner_lr?"),
        (
            {"learner.first_ordr": True},
            "learner.first_ordr: unknown key; did you mean first_order?",
        ),
        ({"model.hiden": 3}, "model.hiden: unknown key"),
        ({"data.amplitud": "[1, 2]"}, "data.amplitud: unknown key; did you mean amplitude?"),
        (
            {"optimizer.weight_decy": 0.1},
            "optimizer.weight_decy: unknown key; did you mean weight_decay?",
        ),
        (
            {"scheduler.name": "cosine", "scheduler.eta_mn": 0},
            "scheduler.eta_mn: unknown key; did you mean eta_min?",
        ),
    ],
)
def test_constructor_keywords_are_checked(changes, message):
    config = config_from_dict(minimal(**changes))
    with pytest.raises(ConfigError) as info:
        check_config(config)
    assert message in str(info.value)


def test_an_unknown_learner_lists_the_available_ones():
    config = config_from_dict(minimal(**{"learner.name": "MAMML"}))
    with pytest.raises(MissingComponentError, match=r"metalearn\.MAMML.*did you mean MAML\?"):
        check_config(config)


def test_conv4_head_must_match_n_way(monkeypatch):
    install_fake_datasets(monkeypatch)
    config = config_from_dict(
        minimal(
            **{
                "data.name": "miniimagenet",
                "data.root": "/data",
                "data.n_way": 5,
                "model": "{name: conv4, n_classes: 20}",
            }
        )
    )
    with pytest.raises(ConfigError, match=r"model\.n_classes: 20 classes but data\.n_way is 5"):
        check_config(config)


def test_overrides_parse_yaml_values():
    data = apply_overrides(
        minimal(),
        ["train.grad_clip=1.5", "train.amp=true", "model.sizes=[1, 4, 4, 1]", "scheduler=null"],
    )
    config = config_from_dict(data)
    assert config.train.grad_clip == 1.5 and config.train.amp is True
    assert config.model.options["sizes"] == [1, 4, 4, 1] and config.scheduler is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.iterations", "expected key=value"),
        ("=3", "expected key=value"),
        ("train..x=3", "expected key=value"),
        ("learner.name.first=3", "learner.name is a value, not a section"),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(minimal(), [override])


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {name: sine, k_shot: 5, k_query: 5}\nmodle: {}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: modle: unknown key; did you mean model\?"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def install_fake_datasets(monkeypatch):
    """Stand-ins for the image datasets and FewShot, recording how they are built."""
    built = []

    class MiniImagenet:
        def __init__(self, root, split="train", format="auto"):
            built.append(("MiniImagenet", root, split, format))

    class FewShot:
        def __init__(self, dataset, n_way, k_shot, k_query):
            built.append(("FewShot", n_way, k_shot, k_query))

    module = types.ModuleType("metalearn.datasets")
    module.MiniImagenet = MiniImagenet
    monkeypatch.setitem(sys.modules, "metalearn.datasets", module)
    monkeypatch.setattr(ml.tasks, "FewShot", FewShot, raising=False)
    return built


def test_image_tasks_are_built_lazily_by_name(monkeypatch):
    built = install_fake_datasets(monkeypatch)
    config = load_config(
        "configs/miniimagenet/maml_5way_1shot.yaml", ["data.format=ravi", "data.root=/mini"]
    )
    check_config(config)
    build_task_sampler(config, "train")
    build_task_sampler(config, "test")
    assert built == [
        ("MiniImagenet", "/mini", "train", "ravi"),
        ("FewShot", 5, 1, 15),
        ("MiniImagenet", "/mini", "test", "ravi"),
        ("FewShot", 5, 1, 15),
    ]
    bad = load_config("configs/miniimagenet/maml_5way_1shot.yaml", ["data.fromat=ravi"])
    with pytest.raises(ConfigError, match=r"data\.fromat: unknown key; did you mean format\?"):
        check_config(bad)


def test_config_is_a_dataclass_tree():
    config = config_from_dict(minimal())
    assert isinstance(config, Config)
    assert config.optimizer.name == "adam" and config.validation is None


def test_scientific_notation_reads_as_a_number(tmp_path):
    path = tmp_path / "sci.yaml"
    path.write_text(SINE.read_text() + "scheduler: {name: cosine, eta_min: 1e-5}\n")
    config = load_config(path, ["optimizer.lr=3e-4"])
    assert config.optimizer.lr == 3e-4
    assert config.scheduler.options["eta_min"] == 1e-5


def test_train_compile_compiles_the_learner(tmp_path):
    config = config_from_dict(minimal(**{"train.compile": "true", "train.compile_mode": "default"}))
    trainer = build_trainer(config, run_dir=tmp_path, device="cpu", progress=False)
    assert trainer.learner._compile_options["mode"] == "default"
    plain = build_trainer(
        config_from_dict(minimal()), run_dir=tmp_path, device="cpu", progress=False
    )
    assert plain.learner._compile_options is None
