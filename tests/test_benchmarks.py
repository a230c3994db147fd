"""The MAML benchmark harness: its implementations agree, and its agreement check can fail."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_maml", ROOT / "benchmarks/bench_maml.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_maml"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench_maml"]


def gradients(bench, name, workload):
    impl = bench.IMPLEMENTATIONS[name](workload, torch.device("cpu"))
    return bench.meta_gradient(impl, workload.batch(torch.device("cpu")))


def available(bench, names):
    out = []
    for name in names:
        try:
            bench.IMPLEMENTATIONS[name](bench.SMOKE, torch.device("cpu"))
        except ImportError:
            continue
        out.append(name)
    return out


@pytest.mark.parametrize("kind", ["smoke", "sine"])
def test_every_implementation_gives_metalearns_meta_gradient(bench, float64, kind):
    workload = bench.SMOKE if kind == "smoke" else replace(bench.WORKLOADS["sine"], meta_batch=3)
    names = available(bench, list(bench.IMPLEMENTATIONS))
    assert {"metalearn", "metalearn-loop", "metalearn-vmap", "autograd-loop"} <= set(names)
    if kind == "smoke":  # compiling a conv step takes long; tests/algorithms covers it
        names.remove("metalearn+compile")
    reference = gradients(bench, "metalearn", workload)
    for name in names:
        error = bench.compare_gradients(reference, gradients(bench, name, workload), name, 1e-9)
        assert error < 1e-9


def test_agreement_check_catches_a_wrong_meta_gradient(bench, float64):
    reference = gradients(bench, "metalearn", bench.SMOKE)
    # A real mistake: the first-order gradient passed off as the second-order one.
    first_order = bench.Metalearn(bench.SMOKE, torch.device("cpu"), "auto")
    first_order.learner.first_order = True
    wrong = bench.meta_gradient(first_order, bench.SMOKE.batch(torch.device("cpu")))
    with pytest.raises(bench.GradientMismatchError, match="differs from metalearn's"):
        bench.compare_gradients(reference, wrong, "first-order", 1e-6)
    # A small perturbation of one parameter, and a NaN.
    perturbed = {k: v.clone() for k, v in reference.items()}
    perturbed["0"] += 1e-3 * perturbed["0"].abs().max()
    with pytest.raises(bench.GradientMismatchError, match="parameter 0"):
        bench.compare_gradients(reference, perturbed, "perturbed", 1e-6)
    perturbed["0"][0] = float("nan")
    with pytest.raises(bench.GradientMismatchError):
        bench.compare_gradients(reference, perturbed, "nan", 1.0)
    with pytest.raises(bench.GradientMismatchError, match="different parameters"):
        bench.compare_gradients(reference, {"0": reference["0"]}, "missing", 1.0)


def test_timing_takes_optimizer_steps(bench):
    impl = bench.IMPLEMENTATIONS["metalearn"](bench.SMOKE, torch.device("cpu"))
    before = [p.detach().clone() for p in impl.model().parameters()]
    times = bench.time_steps(impl, bench.SMOKE.batch(torch.device("cpu")), reps=2, warmup=1)
    assert len(times) == 2 and all(t > 0 for t in times)
    after = list(impl.model().parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_harness_end_to_end_in_child_processes(bench, tmp_path):
    output = tmp_path / "bench.md"
    code = bench.main(
        [
            "--workloads",
            "smoke",
            "--impls",
            "metalearn,autograd-loop,autograd-loop+allocator",
            "--quick",
            "--no-curves",
            "--no-leak",
            "--threads",
            "1",
            "--rounds",
            "1",  # two rounds: test_rounds_alternate_the_rows_and_pool_their_times (no children)
            "--output",
            str(output),
        ]
    )
    assert code == 0
    text = output.read_text()
    assert "| metalearn |" in text and "| autograd-loop |" in text
    assert "| autograd-loop+allocator |" in text
    assert "torch " in text and "CPU:" in text


def test_rounds_alternate_the_rows_and_pool_their_times(bench, monkeypatch):
    # The parent's bookkeeping without child processes (each costs a torch import): gradients
    # first (untuned rows only), then every row once per round, times pooled, peaks maxed.
    calls = []

    def fake_child(args, workload, impl, **extra):
        calls.append((impl, "grad" if extra.get("grad_out") else extra["reps"]))
        if extra.get("grad_out"):
            torch.save({"0": torch.ones(2)}, extra["grad_out"])
            return {"how": ""}
        peak = 100.0 + len(calls)
        return {"how": "", "times": [0.01 * len(calls)] * extra["reps"], "peak_mib": peak}

    monkeypatch.setattr(bench, "run_in_child", fake_child)
    args = bench.parse_args(["--impls", "metalearn,autograd-loop+allocator", "--rounds", "2"])
    lines = []
    results = bench.benchmark_workload(args, bench.SMOKE, lines.append)
    reps = -(-bench.scaled(bench.SMOKE, False).reps // 2)
    assert calls == [("metalearn", "grad"), ("metalearn", reps), ("autograd-loop+allocator", reps),
                     ("metalearn", reps), ("autograd-loop+allocator", reps)]  # fmt: skip
    assert results["metalearn"]["times"] == [0.02] * reps + [0.04] * reps
    assert results["autograd-loop+allocator"]["times"] == [0.03] * reps + [0.05] * reps
    assert results["metalearn"]["peak_mib"] == 104.0
    assert results["metalearn"]["grad_error"] == 0.0
    assert "| metalearn |" in lines[-1] and "| autograd-loop+allocator |" in lines[-1]


def test_unknown_names_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--workloads", "imagenet"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--impls", "jax"])
    with pytest.raises(SystemExit):  # only peers take the allocator suffix
        bench.parse_args(["--impls", "metalearn-loop+allocator"])


def test_allocator_rows_name_their_peer(bench):
    assert bench.split_name("learn2learn+allocator") == ("learn2learn", True)
    assert bench.split_name("learn2learn") == ("learn2learn", False)
    assert bench.split_name("metalearn") == ("metalearn", True)  # as metalearn's Trainer runs
    names = bench.default_implementations(bench.SMOKE, torch.device("cpu"))
    assert {p + bench.TUNED for p in bench.PEERS} <= set(names)
    # Compiling is a default row on the sine MLP only.
    assert "metalearn+compile" not in names
    sine = bench.default_implementations(bench.WORKLOADS["sine"], torch.device("cpu"))
    assert "metalearn+compile" in sine


def test_peers_run_in_their_users_idiom_and_the_variant_is_labelled(bench):
    device = torch.device("cpu")
    idiom = bench.IMPLEMENTATIONS["autograd-loop"](bench.SMOKE, device)
    once = bench.IMPLEMENTATIONS["autograd-loop/one-backward"](bench.SMOKE, device)
    assert not idiom.one_backward and once.one_backward
    names = bench.default_implementations(bench.SMOKE, device)
    for peer in bench.PEERS:
        assert peer in names and f"{peer}/one-backward" in names
    assert {"metalearn+own-model", "metalearn/one-backward"} <= set(names)
    own = bench.IMPLEMENTATIONS["metalearn+own-model"](bench.SMOKE, device)
    pools = [m for m in own.learner.model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert pools and all(type(m).__name__ == "MaxPool2x2" for m in pools)


@pytest.mark.slow  # four child processes
def test_memory_curve_in_child_processes(bench, tmp_path):
    output = tmp_path / "bench.md"
    args = ["--workloads", "", "--memory", "smoke", "--impls", "metalearn", "--no-curves"]
    args += ["--no-leak", "--threads", "1", "--output", str(output)]
    assert bench.main(args) == 0
    text = output.read_text()
    assert "Peak memory (MiB, peak RSS) vs meta-batch" in text
    row = next(line for line in text.splitlines() if line.startswith("| metalearn |"))
    assert row.count("|") == len(bench.MEMORY_BATCHES) + 3


def test_chunk_memory_child_runs_a_chunked_vmapped_step():
    import json
    import subprocess

    script = ROOT / "benchmarks/bench_chunk_memory.py"
    command = [sys.executable, str(script), "--child", "vmap", "1", "--meta-batch", "2"]
    out = subprocess.run([*command, "--steps", "1"], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["peak_mib"] > result["before_mib"] > 0 and result["cpu_s"] > 0
