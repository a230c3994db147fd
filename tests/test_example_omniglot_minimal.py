"""examples/omniglot_minimal.py without the data: options from a config, and the report."""

from __future__ import annotations

import json

import pytest


def test_config_fills_what_the_command_line_does_not_name(load_example, tmp_path):
    example = load_example("omniglot_minimal")
    config = tmp_path / "c.yaml"
    config.write_text("learner: anil\nways: 20\niterations: 50\ncurve_every: 150\n")
    args = example.parse(["--root", "r", "--config", str(config), "--curve-every", "100"])
    # 100 is the default, but it was given explicitly: it wins over the config's 150.
    assert (args.learner, args.ways, args.iterations, args.curve_every) == ("anil", 20, 50, 100)
    config.write_text("augment: true\n")
    assert example.parse(["--root", "r", "--config", str(config)]).augment is True
    assert example.parse(["--root", "r", "--config", str(config), "--no-augment"]).augment is False
    config.write_text("learner: anil\nwayz: 20\n")
    with pytest.raises(SystemExit):
        example.parse(["--root", "r", "--config", str(config)])
    with pytest.raises(SystemExit):
        example.parse([])  # --root is required unless --report


def test_report_table_and_curves(load_example, tmp_path):
    example = load_example("omniglot_minimal")
    for learner, ways, acc in (("maml", 5, 0.9), ("pixel-nn", 5, 0.4), ("maml", 20, 0.7)):
        curve = [{"iteration": i, "test_accuracy": acc * i / 10} for i in (1, 10)]
        summary = {
            "learner": learner,
            "ways": ways,
            "options": {"iterations": 10},
            "accuracy": {"any-class": {"mean": acc, "ci95": 0.01}},
            "seconds": 120.0,
            "curve": curve if learner == "maml" else [],
        }
        if ways == 20:
            summary["iterations_done"] = 7  # --max-minutes stopped it before its 10 iterations
        (tmp_path / f"{learner}_{ways}way.json").write_text(json.dumps(summary))
    table = example.report(tmp_path).splitlines()
    assert table[2] == "| maml | 5 | 90.0 ± 1.0 | - | 10 | 2.0 |"
    assert table[3] == "| pixel-nn | 5 | 40.0 ± 1.0 | - | - | 2.0 |"
    assert table[4] == "| maml | 20 | 70.0 ± 1.0 | - | 7 | 2.0 |"
    assert (tmp_path / "curves.png").stat().st_size > 1000


@pytest.fixture
def fake_minimal(tmp_path, monkeypatch):
    """Tiny generated minimal sets (2 train, 2 test alphabets) that ``Omniglot`` reads; their
    root."""
    import functools

    import metalearn as ml

    _fakes().write_omniglot_minimal(tmp_path / "data")
    subset = functools.partial(ml.datasets.Omniglot, check_classes=False)
    monkeypatch.setattr(ml.datasets, "Omniglot", subset)
    return tmp_path / "data"


def _fakes():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "datasets" / "fewshot_fakes.py"
    spec = importlib.util.spec_from_file_location("omniglot_fakes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "learner", ["protonet", "protomaml", "unicorn", "imaml", "cavia", "pretrain-global"]
)
def test_new_learners_run_on_generated_omniglot(fake_minimal, load_example, tmp_path, learner):
    # Tiny generated minimal sets (2 train, 2 test alphabets): 2 iterations, 2-way.
    from pathlib import Path

    config = Path(__file__).parents[1] / "configs" / "omniglot_minimal" / f"{learner}_5way.yaml"
    argv = [
        "--root", str(fake_minimal), "--config", str(config), "--ways", "2",
        "--iterations", "2", "--meta-batch", "2", "--hidden", "4", "--test-tasks", "3",
        "--curve-every", "0", "--test-steps", "1", "--out", str(tmp_path / "out"),
        "--no-progress", "--context-size", "3", "--queries", "1", "--test-queries", "1",
    ]  # fmt: skip
    summary = load_example("omniglot_minimal").main(argv)
    assert summary["learner"] == learner
    for protocol in ("any-class", "within-alphabet"):
        assert 0.0 <= summary["accuracy"][protocol]["mean"] <= 1.0
    assert (tmp_path / "out" / f"{learner}_2way.json").exists()


def test_zero_head_keeps_its_zero_start_through_meta_training(fake_minimal, load_example, tmp_path):
    from pathlib import Path

    import torch

    config = Path(__file__).parents[1] / "configs" / "omniglot_minimal" / "unicorn_5way.yaml"
    argv = [
        "--root", str(fake_minimal), "--config", str(config), "--ways", "2",
        "--iterations", "2", "--meta-batch", "2", "--hidden", "4", "--test-tasks", "3",
        "--curve-every", "0", "--test-steps", "1", "--out", str(tmp_path / "out"),
        "--no-progress", "--queries", "1", "--test-queries", "1",
    ]  # fmt: skip
    example = load_example("omniglot_minimal")
    example.main([*argv, "--learner", "zero-head"])
    state = torch.load(tmp_path / "out" / "zero-head_2way.pt")
    assert not state["head_weight"].any() and not state["head_bias"].any()
    example.main(argv)  # unicorn: the shared row is a meta-learned parameter of the learner
    # (not asserted to move: under softmax cross-entropy a row shared by every class shifts all
    # logits alike, so its meta-gradient is zero up to rounding, which Adam may or may not
    # turn into steps depending on the CPU's rounding)
    assert torch.load(tmp_path / "out" / "unicorn_2way.pt")["head_weight"].shape == (4,)


def _configs():
    from pathlib import Path

    return sorted((Path(__file__).parents[1] / "configs" / "omniglot_minimal").glob("*.yaml"))


@pytest.mark.parametrize("config", _configs(), ids=lambda p: p.stem)
def test_every_shipped_config_parses_to_its_values(load_example, config):
    import yaml

    args = load_example("omniglot_minimal").parse(["--root", "r", "--config", str(config)])
    for key, value in yaml.safe_load(config.read_text()).items():
        assert getattr(args, key) == value, key


def test_pretrain_global_learns_the_global_classes_then_adapts_only_a_zero_head(load_example):
    # Four classes of distinct constant images: the global classifier must learn them, and the
    # few-shot learner it returns carries the trained body, a zero head and adapts the head only.
    import numpy as np

    import metalearn as ml

    example = load_example("omniglot_minimal")
    data = np.repeat(np.array([0, 80, 160, 240], dtype=np.uint8), 5)[:, None, None]
    data = np.ascontiguousarray(np.broadcast_to(data, (20, 28, 28)))
    train = ml.datasets.ImageClasses.from_labels(data, np.repeat(np.arange(4), 5), list("abcd"))
    args = example.parse(["--root", "r", "--ways", "2", "--hidden", "4", "--queries", "1",
                          "--meta-batch", "4", "--iterations", "150", "--lr", "0.03"])  # fmt: skip
    seen = []
    learner = example.pretrain_global(args, train, lambda i, m: seen.append(m["accuracy"]))
    assert len(seen) == 150 and seen[-1] == 1.0 and seen[0] < 1.0
    assert isinstance(learner, ml.Pretrain)
    assert learner.model.head.out_features == 2
    assert not learner.model.head.weight.any() and not learner.model.head.bias.any()
    assert sorted(learner.adapt_names) == ["head.bias", "head.weight"]


def test_downsample_stride_builds_finns_omniglot_conv4_and_cavia_refuses_it(load_example):
    import torch

    example = load_example("omniglot_minimal")
    args = example.parse(["--root", "r", "--ways", "5", "--downsample", "stride"])
    model = example.build_learner(args).model
    assert model.downsample == "stride" and model.head.in_features == 64
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert example.build_learner(example.parse(["--root", "r"])).model.downsample == "maxpool"
    args = example.parse(["--root", "r", "--learner", "cavia", "--downsample", "stride"])
    with pytest.raises(SystemExit, match="max-pooling only"):
        example.build_learner(args)


@pytest.mark.parametrize("learner", ["maml", "metasgd", "mamlpp", "pretrain-global"])
def test_narrowed_learner_keeps_the_first_output_units_of_the_trained_one(load_example, learner):
    import torch

    example = load_example("omniglot_minimal")
    args = example.parse(["--root", "r", "--learner", learner, "--ways", "5", "--hidden", "4"])
    trained = example.build_learner(args)
    with torch.no_grad():
        for p in trained.parameters():
            p.normal_()  # no zero head: every unit differs
    small = example.narrowed(trained, args, 3)
    assert small.model.head.out_features == 3
    x = torch.randn(6, 1, 28, 28)
    torch.testing.assert_close(small.model(x), trained.model(x)[:, :3])
    if learner == "metasgd":
        for name, rate in small.update.rates.items():
            torch.testing.assert_close(rate, trained.update.rates[name][: rate.shape[0]])
    if learner == "pretrain-global":
        assert sorted(small.adapt_names) == ["head.bias", "head.weight"]
    assert example.narrowed(trained, args, 5) is trained
    with pytest.raises(SystemExit, match="cannot test more ways"):
        example.narrowed(trained, args, 6)


def test_test_ways_evaluates_one_training_at_several_n(fake_minimal, load_example, tmp_path):
    import json

    import torch

    example = load_example("omniglot_minimal")
    argv = [
        "--root", str(fake_minimal), "--ways", "3", "--test-ways", "3", "2",
        "--iterations", "2", "--meta-batch", "2", "--hidden", "4", "--test-tasks", "3",
        "--curve-every", "1", "--curve-tasks", "2", "--test-steps", "1", "--queries", "1",
        "--test-queries", "1", "--out", str(tmp_path / "out"), "--no-progress",
    ]  # fmt: skip
    summary = example.main(argv)
    assert summary["ways"] == summary["train_ways"] == 3 and summary["curve"]
    other = json.loads((tmp_path / "out" / "maml_3way_test2way.json").read_text())
    assert other["ways"] == 2 and other["train_ways"] == 3 and other["curve"] == []
    assert other["iterations_done"] == summary["iterations_done"] == 2
    state = torch.load(tmp_path / "out" / "maml_3way.pt")
    assert state["model.head.weight"].shape[0] == 3
    table = example.report(tmp_path / "out")
    assert "| maml (meta-trained 3-way) | 2 |" in table and "| maml | 3 |" in table


TRAIN_TWICE = ["--iterations", "2", "--meta-batch", "2", "--queries", "1"]


def tiny_3way(root, out, tasks: int, steps: int, queries: int) -> list[str]:
    """The options of a tiny 3-way run on the fake minimal sets, writing to ``out``."""
    return [
        "--root", str(root), "--ways", "3", "--hidden", "4", "--test-tasks", str(tasks),
        "--test-steps", str(steps), "--test-queries", str(queries), "--out", str(out),
        "--no-progress",
    ]  # fmt: skip


def test_load_evaluates_a_saved_learner_again_with_support_copies(
    fake_minimal, load_example, tmp_path
):
    import json

    example = load_example("omniglot_minimal")
    out = tmp_path / "out"
    common = tiny_3way(fake_minimal, out, tasks=4, steps=1, queries=1)
    training = [*TRAIN_TWICE, "--curve-every", "1"]
    trained = example.main([*common, *training, "--curve-tasks", "2"])
    again = example.main([*common, "--load", str(out / "maml_3way.pt")])
    # Same learner, same test tasks: the same accuracies; the training's record carried over.
    assert again["accuracy"] == trained["accuracy"]
    assert again["iterations_done"] == 2 and again["train_seconds"] == trained["train_seconds"]
    assert again["seconds"] >= trained["train_seconds"]
    assert trained["curve"] and again["curve"] == []  # one curve per training, on its own row
    assert json.loads((out / "maml_3way_steps1.json").read_text())["options"]["load"]
    copies = example.main(
        [*common, "--load", str(out / "maml_3way.pt"), "--test-support-copies", "2"]
    )
    assert copies["accuracy"] != trained["accuracy"] and copies["curve"] == []
    assert (out / "maml_3way_support2_steps1.json").is_file()
    table = example.report(out)
    assert "| maml (support + 2 distorted copies, 1 test steps) | 3 |" in table
    assert "| maml (1 test steps) | 3 |" in table and "| maml | 3 |" in table
    with pytest.raises(SystemExit, match="must match the saving run"):
        example.main([*common[:3], "4", *common[4:], "--load", str(out / "maml_3way.pt")])
    with pytest.raises(SystemExit, match="no such file"):
        example.main([*common, "--load", str(out / "missing.pt")])
    with pytest.raises(SystemExit, match="no meta-trained state"):
        example.main([*common, "--learner", "pixel-nn", "--load", str(out / "maml_3way.pt")])


def test_init_meta_trains_a_saved_learner_on(fake_minimal, load_example, tmp_path):
    import torch

    example = load_example("omniglot_minimal")
    out = tmp_path / "out"
    common = tiny_3way(fake_minimal, out, tasks=4, steps=1, queries=1)
    first = example.main([*common, *TRAIN_TWICE, "--curve-every", "0"])
    saved = out / "maml_3way.pt"
    before = torch.load(saved)
    loaded = example.main([*common, "--load", str(saved)])
    # A meta rate of 0 leaves the loaded weights as they are: the saved state comes out
    # unchanged (a fresh network would not) and tests as the saved learner does.
    later = tmp_path / "later"
    still = tiny_3way(fake_minimal, later, tasks=4, steps=1, queries=1)
    frozen = example.main([*still, *TRAIN_TWICE, "--init", str(saved), "--lr", "0",
                           "--curve-every", "1", "--curve-tasks", "2"])  # fmt: skip
    kept = torch.load(later / "maml_3way.pt")
    assert all(torch.equal(before[k], kept[k]) for k in before)
    assert frozen["accuracy"] == loaded["accuracy"]
    # The row counts both runs: iterations, training time and the curve's iteration numbers.
    assert frozen["iterations_done"] == 4
    assert frozen["train_seconds"] > first["train_seconds"]
    assert [point["iteration"] for point in frozen["curve"]] == [3, 4]
    on = example.main([*still, *TRAIN_TWICE, "--init", str(saved), "--seed", "1"])
    after = torch.load(later / "maml_3way.pt")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert on["iterations_done"] == 4 and torch.equal(
        torch.load(saved)["model.head.weight"], before["model.head.weight"]
    )
    with pytest.raises(SystemExit, match="no such file"):
        example.main([*still, *TRAIN_TWICE, "--init", str(out / "missing.pt")])
    with pytest.raises(SystemExit, match="cannot go with --load"):
        example.main([*still, "--init", str(saved), "--load", str(saved)])
    with pytest.raises(SystemExit, match="cannot go with pixel-nn"):
        example.main([*still, "--learner", "pixel-nn", "--init", str(saved)])
    with pytest.raises(SystemExit, match="must match the saving run"):
        example.main([*still[:3], "4", *still[4:], *TRAIN_TWICE, "--init", str(saved)])


def test_query_copies_average_the_adapted_networks_probabilities(
    fake_minimal, load_example, tmp_path, monkeypatch
):
    import torch

    import metalearn as ml

    example = load_example("omniglot_minimal")
    out = tmp_path / "out"
    common = tiny_3way(fake_minimal, out, tasks=5, steps=2, queries=2)
    training = [*TRAIN_TWICE, "--curve-every", "0"]
    trained = example.main([*common, *training])
    saved = str(out / "maml_3way.pt")
    tta = example.main([*common, "--load", saved, "--test-query-copies", "3"])
    # The undistorted queries alone, from the same adapted weights: ml.evaluate's accuracy.
    assert tta["accuracy_single"] == trained["accuracy"]
    assert tta["accuracy"] != trained["accuracy"] and tta["curve"] == []
    assert (out / "maml_3way_queries3_steps2.json").is_file()
    table = example.report(out)
    assert "| maml (each query averaged with 3 distorted copies, 2 test steps) | 3 |" in table
    # By hand on one task: the prediction is the argmax of the mean of the probabilities.
    args = example.parse([*common, "--load", saved])
    learner = example.build_learner(args)
    learner.load_state_dict(torch.load(saved))
    (tasks,) = example.test_samplers(args.root, 3, 2, ["any-class"]).values()
    monkeypatch.setattr(example, "distortions", lambda: lambda x, g: x.flip(-1))
    result = example.evaluate_query_copies(learner, tasks, 1, 2, copies=2)
    task = tasks.sample(1, generator=torch.Generator().manual_seed(example.task_seed(0, 0)))
    task = task.task(0)
    with torch.no_grad():
        params = learner.adapt(task.support, 2)
        plain = learner.predict(params, task.query.x).softmax(-1)
        flipped = learner.predict(params, task.query.x.flip(-1)).softmax(-1)
    hand = ((plain + 2 * flipped).argmax(-1) == task.query.y).float().mean().double()
    assert result.per_task["accuracy"][0, 0] == hand
    single = (plain.argmax(-1) == task.query.y).float().mean().double()
    assert result.per_task["accuracy_single"][0, 0] == single
    assert ml.evaluate(learner, tasks, 1, 2).per_task["accuracy"][0, 0] == single
    with pytest.raises(SystemExit, match="must be >= 0"):
        example.main([*common, "--load", saved, "--test-query-copies", "-1"])
    with pytest.raises(SystemExit, match="no class probabilities"):
        example.main([*common, "--learner", "pixel-nn", "--test-query-copies", "2"])


@pytest.mark.parametrize("learner", ["maml", "pretrain-global"])
def test_cosine_lr_schedule_decays_to_zero_over_the_iterations(
    fake_minimal, load_example, tmp_path, monkeypatch, learner
):

    example = load_example("omniglot_minimal")
    made = []
    example_schedule = example.lr_schedule

    def recording(args, optimizer):
        made.append(example_schedule(args, optimizer))
        return made[-1]

    monkeypatch.setattr(example, "lr_schedule", recording)
    argv = [
        "--root", str(fake_minimal), "--learner", learner, "--ways", "2",
        "--iterations", "3", "--meta-batch", "2", "--hidden", "4", "--test-tasks", "2",
        "--curve-every", "0", "--test-steps", "1", "--queries", "1", "--test-queries", "1",
        "--out", str(tmp_path / "out"), "--no-progress", "--lr", "0.01",
    ]  # fmt: skip
    example.main([*argv, "--lr-schedule", "cosine"])
    (schedule,) = made
    assert schedule.last_epoch == 3  # stepped once per meta-update
    assert schedule.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    example.main(argv)  # constant, the default: no schedule
    assert made[1] is None


def test_schedule_iterations_repeats_a_run_the_time_budget_stopped(
    fake_minimal, load_example, tmp_path, monkeypatch
):
    # A cosine planned over 4 iterations, stopped by --max-minutes after 2, ends in the same
    # weights as --iterations 2 --schedule-iterations 4, and not in those of a 2-iteration cosine.
    import types

    import torch

    example = load_example("omniglot_minimal")
    argv = [
        "--root", str(fake_minimal), "--ways", "2", "--meta-batch", "2", "--hidden", "4",
        "--test-tasks", "2", "--curve-every", "0", "--test-steps", "1", "--queries", "1",
        "--test-queries", "1", "--no-progress", "--lr", "0.05", "--lr-schedule", "cosine",
    ]  # fmt: skip

    def weights(*options: str) -> dict:
        out = tmp_path / "-".join(options)
        summary = example.main([*argv, *options, "--out", str(out)])
        state = torch.load(out / "maml_2way.pt")
        return summary["iterations_done"], state

    # A clock that advances a minute per reading: the example reads it once at the start and
    # once per meta-update (no probes), so a 1.5-minute budget ends after 2 updates.
    clock = iter(range(0, 10**6, 60))
    with monkeypatch.context() as patch:
        patch.setattr(example, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
        stopped = weights("--iterations", "4", "--max-minutes", "1.5")
    repeated = weights("--iterations", "2", "--schedule-iterations", "4")
    shorter = weights("--iterations", "2")
    assert stopped[0] == repeated[0] == shorter[0] == 2
    for name, value in stopped[1].items():
        torch.testing.assert_close(repeated[1][name], value, rtol=0, atol=0)
    assert any(not torch.equal(shorter[1][n], v) for n, v in stopped[1].items())
    with pytest.raises(SystemExit, match="only with --lr-schedule cosine"):
        example.main([*argv[:-2], "--schedule-iterations", "4", "--iterations", "1"])


def test_mirror_adds_reflected_training_characters_and_leaves_the_test_alone(
    load_example, tmp_path, monkeypatch
):
    import metalearn as ml

    _fakes().write_omniglot_minimal(tmp_path / "data")
    loaded = []
    original = ml.datasets.Omniglot

    def recording(*args, **kwargs):
        loaded.append(original(*args, check_classes=False, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(ml.datasets, "Omniglot", recording)
    argv = [
        "--root", str(tmp_path / "data"), "--ways", "2", "--iterations", "1",
        "--meta-batch", "2", "--hidden", "4", "--test-tasks", "2", "--curve-every", "0",
        "--test-steps", "1", "--queries", "1", "--test-queries", "1",
        "--out", str(tmp_path / "out"), "--no-progress", "--mirror",
    ]  # fmt: skip
    summary = load_example("omniglot_minimal").main(argv)
    train, *tests = loaded
    assert train.split == "train" and train.mirror
    assert train.num_classes == 2 * 4 * len(train.base_names)  # plain and mirrored, 4 angles
    assert tests and all(t.split == "test" and not t.mirror and t.rotations == (0,) for t in tests)
    assert summary["options"]["mirror"] is True


def test_device_option_trains_and_tests_the_learner_there(
    fake_minimal, load_example, tmp_path, device
):
    import torch

    example = load_example("omniglot_minimal")
    out = tmp_path / "out"
    common = [*tiny_3way(fake_minimal, out, tasks=3, steps=1, queries=1), "--device", str(device)]
    trained = example.main(
        [*common, *TRAIN_TWICE, "--curve-every", "1", "--curve-tasks", "2", "--test-ways", "3", "2"]
    )
    assert trained["iterations_done"] == 2 and trained["options"]["device"] == str(device)
    assert (out / "maml_3way_test2way.json").is_file()  # the narrowed learner, on the device too
    state = torch.load(out / "maml_3way.pt")
    assert {v.device.type for v in state.values()} == {device.type}
    tta = example.main([*common, "--load", str(out / "maml_3way.pt"), "--test-query-copies", "2"])
    if device.type == "cpu":  # the same adapted weights as ml.evaluate's (bit for bit on a CPU)
        assert tta["accuracy_single"] == trained["accuracy"]
    assert 0 <= tta["accuracy"]["any-class"]["mean"] <= 1


def test_device_option_errors(fake_minimal, load_example, tmp_path):
    import torch

    example = load_example("omniglot_minimal")
    common = tiny_3way(fake_minimal, tmp_path, tasks=1, steps=1, queries=1)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA is not available here"):
            example.main([*common, "--device", "cuda"])
    for learner in ("pixel-nn", "pretrain-global"):
        with pytest.raises(SystemExit, match="runs on the CPU only"):
            example.main([*common, "--learner", learner, "--device", "meta"])
