"""Peak memory of one meta-step vs inner steps: IMAML (flat) against second-order MAML.

Each (learner, inner steps) pair runs in a fresh process (peak RSS only grows within one):
the process builds the learner, takes a warm-up meta-step with one inner step, reads its peak
resident set size, takes the measured meta-step (forward and ``backward()``), and reports the
growth of the peak. Prints a Markdown table::

    python benchmarks/bench_imaml_memory.py                      # 5 and 50 inner steps
    python benchmarks/bench_imaml_memory.py --steps 5 20 50 --hidden 512
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch
import torch.nn.functional as F

import metalearn as ml


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _measure(name: str, steps: int, hidden: int, tasks: int) -> dict:
    torch.manual_seed(0)
    model = ml.models.MLP([1, hidden, hidden, 1])
    if name == "IMAML":
        learner = ml.IMAML(model, F.mse_loss, 0.01, 1, lam=1.0, cg_steps=5)
    else:
        learner = ml.MAML(model, F.mse_loss, 0.01, 1, vectorize="loop")
    batch = ml.tasks.Sine(10, 10).sample(tasks, torch.Generator().manual_seed(0))
    learner(batch).loss.backward()  # warm-up: kernels, allocator, autograd machinery
    learner.zero_grad()
    before = _peak_mib()
    learner.inner_steps = steps
    learner(batch).loss.backward()
    peak = _peak_mib()
    return {"learner": name, "steps": steps, "peak_mib": peak, "growth_mib": peak - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 50])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--child", nargs=2, metavar=("LEARNER", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, steps = args.child[0], int(args.child[1])
        print(json.dumps(_measure(name, steps, args.hidden, args.tasks)))
        return
    params = sum(p.numel() for p in ml.models.MLP([1, args.hidden, args.hidden, 1]).parameters())
    print(
        f"MLP 1-{args.hidden}-{args.hidden}-1 ({params:,} parameters), {args.tasks} sine tasks "
        f"of 10+10 points, torch {torch.__version__}, one meta-step (forward + backward)\n"
    )
    print("| learner | inner steps | peak RSS (MiB) | growth over the warm-up step (MiB) |")
    print("|---|---|---|---|")
    for name in ("IMAML", "MAML"):
        for steps in args.steps:
            command = [sys.executable, __file__, "--child", name, str(steps)]
            command += ["--hidden", str(args.hidden), "--tasks", str(args.tasks)]
            row = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
            print(f"| {name} | {steps} | {row['peak_mib']:.0f} | {row['growth_mib']:.1f} |")


if __name__ == "__main__":
    main()
