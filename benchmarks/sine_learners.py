"""Every learner on sine regression: MSE after 1 and 10 steps, and meta-step speed.

Each learner is meta-trained for the same number of meta-iterations on ``Sine(k_shot=10)``
(meta-batch 25, Adam 1e-3, MLP 1-40-40-1: the protocol of Finn et al. 2017), then adapted to
600 fixed test tasks of ``Sine(10, 100, query_grid=True)``; the table gives the query MSE after
1 and 10 inner steps (mean ± 95% CI). Speed is the median time of one meta-step (forward,
backward, optimizer step) on a fixed batch of 25 tasks, with the learners interleaved round by
round so that a noisy machine slows all of them alike.

CAVIA's MLP takes 1 + 5 inputs (the 5 context parameters are concatenated to x: 6-40-40-1).
ProtoNet, ProtoMAML and UnicornMAML are not in the table: they classify (prototypes of classes;
one shared start for every class's head row), and sine is regression.

Run (a few minutes on 2 CPU cores)::

    python benchmarks/sine_learners.py                     # 3000 meta-iterations
    python benchmarks/sine_learners.py --iterations 70000  # the paper's length
    python benchmarks/sine_learners.py --iterations 0      # speed tables only
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import metalearn as ml

INNER_LR = 0.01
MAMLPP_STEPS = 5
REPTILE_STEPS = 5
# CAVIA: the authors' regression code (5 context parameters, 1 step of 1.0). iMAML: our choice,
# not tuned (the paper has no sine experiment): MAML's step size 0.01, 10 proximal steps,
# lam = 1, 5 conjugate-gradient steps (0.1 made 10 test-time steps diverge).
CAVIA_CONTEXT, CAVIA_LR = 5, 1.0
IMAML_LR, IMAML_STEPS, IMAML_LAM, IMAML_CG = 0.01, 10, 1.0, 5
NOT_APPLICABLE = (
    "ProtoNet",
    "ProtoMAML",
    "UnicornMAML",
)  # classifiers: "not applicable (classification)"


def learners(iterations: int) -> dict[str, Callable[[], tuple[ml.Learner, str]]]:
    """name -> factory of (learner, protocol note); each builds a fresh MLP 1-40-40-1."""
    epochs = max(1, iterations // 100)  # MAML++'s schedules count epochs of 100 iterations

    def mlp() -> torch.nn.Module:
        return ml.models.MLP([1, 40, 40, 1])

    return {
        "MAML": lambda: (ml.MAML(mlp(), F.mse_loss, INNER_LR, 1), "1 step, second order"),
        "FOMAML": lambda: (ml.FOMAML(mlp(), F.mse_loss, INNER_LR, 1), "1 step, first order"),
        "Reptile": lambda: (
            ml.Reptile(mlp(), F.mse_loss, INNER_LR, REPTILE_STEPS),
            f"{REPTILE_STEPS} SGD steps",
        ),
        "ANIL": lambda: (ml.ANIL(mlp(), F.mse_loss, INNER_LR, 1), "1 step, head only"),
        "Meta-SGD": lambda: (ml.MetaSGD(mlp(), F.mse_loss, INNER_LR, 1), "1 step, learned rates"),
        "MAML++": lambda: (
            ml.MAMLPlusPlus(
                mlp(),
                F.mse_loss,
                INNER_LR,
                MAMLPP_STEPS,
                per_step_bn=False,  # the MLP has no BatchNorm
                iterations_per_epoch=100,
                msl_epochs=max(1, epochs // 10),
                first_order_epochs=epochs // 3,
            ),
            f"{MAMLPP_STEPS} steps, LSLR+MSL+DA+CA",
        ),
        "Pretrain": lambda: (ml.Pretrain(mlp(), F.mse_loss, INNER_LR), "pooled, fine-tuned"),
        "CAVIA": lambda: (
            cavia(1),
            f"{CAVIA_CONTEXT} context params, 1 step of {CAVIA_LR}",
        ),
        "iMAML": lambda: (
            imaml(IMAML_STEPS),
            f"{IMAML_STEPS} proximal steps of {IMAML_LR}, lam {IMAML_LAM}, {IMAML_CG} CG",
        ),
    }


def cavia(steps: int) -> ml.CAVIA:
    model = ml.models.MLP([1 + CAVIA_CONTEXT, 40, 40, 1])
    return ml.CAVIA(model, F.mse_loss, CAVIA_LR, steps, context_size=CAVIA_CONTEXT)


def imaml(steps: int) -> ml.IMAML:
    model = ml.models.MLP([1, 40, 40, 1])
    return ml.IMAML(model, F.mse_loss, IMAML_LR, steps, lam=IMAML_LAM, cg_steps=IMAML_CG)


def train(learner: ml.Learner, iterations: int, seed: int) -> None:
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    options: dict = {}
    if isinstance(learner, ml.MAMLPlusPlus):
        # The trainer sets MAML++'s epoch (iterations_per_epoch=100) before every update; the
        # cosine schedule steps once per epoch. Learned per-step rates on sine can run away
        # (inf meta-loss at ~1,250 iterations without it): clip the meta-gradient.
        schedule = learner.scheduler(optimizer, total_epochs=max(1, iterations // 100))
        options = {"scheduler": _EveryN(schedule, 100), "grad_clip": 1.0}
    ml.train(
        learner,
        ml.tasks.Sine(10, 10),
        optimizer,
        iterations,
        25,
        seed=seed,
        progress=False,
        **options,
    )


class _EveryN:
    """Step ``schedule`` once every ``n`` calls (the trainer steps schedulers per update)."""

    def __init__(self, schedule, n: int) -> None:
        self.schedule, self.n, self.calls = schedule, n, 0

    def step(self) -> None:
        self.calls += 1
        if self.calls % self.n == 0:
            self.schedule.step()

    def state_dict(self) -> dict:
        return {"calls": self.calls, "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]
        self.schedule.load_state_dict(state["schedule"])


def mse_cell(result: ml.Evaluation, steps: int) -> str:
    """``mean ± ci``, or how many tasks diverged (learned rates applied for more steps than
    they were trained for can blow up)."""
    losses = result.per_task["loss"][:, result.steps.index(steps)]
    bad = int((~torch.isfinite(losses)).sum())
    if bad:
        return f"diverges on {bad}/{losses.numel()} tasks"
    mean, ci = result.summary("loss", steps)
    return f"{mean:.3f} ± {ci:.3f}"


def meta_step_times(
    factories: dict[str, Callable[[], ml.Learner]], rounds: int, batch: ml.tasks.TaskBatch
) -> dict[str, float]:
    """Median seconds per meta-step of each learner, interleaved over ``rounds``."""
    built = {}
    for name, make in factories.items():
        torch.manual_seed(0)
        learner = make()
        built[name] = (learner, torch.optim.Adam(learner.parameters(), lr=1e-3))
    times: dict[str, list[float]] = {name: [] for name in built}
    for round_ in range(rounds + 3):
        for name, (learner, optimizer) in built.items():
            start = time.perf_counter()
            out = learner(batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            if round_ >= 3:  # warm-up rounds are not timed
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def speed_factories(steps: int) -> dict[str, Callable[[], ml.Learner]]:
    def mlp() -> torch.nn.Module:
        return ml.models.MLP([1, 40, 40, 1])

    return {
        "MAML": lambda: ml.MAML(mlp(), F.mse_loss, INNER_LR, steps),
        "FOMAML": lambda: ml.FOMAML(mlp(), F.mse_loss, INNER_LR, steps),
        "Reptile": lambda: ml.Reptile(mlp(), F.mse_loss, INNER_LR, steps),
        "ANIL": lambda: ml.ANIL(mlp(), F.mse_loss, INNER_LR, steps),
        "Meta-SGD": lambda: ml.MetaSGD(mlp(), F.mse_loss, INNER_LR, steps),
        "MAML++": lambda: ml.MAMLPlusPlus(
            mlp(), F.mse_loss, INNER_LR, steps, per_step_bn=False, first_order_epochs=0
        ),
        "CAVIA": lambda: cavia(steps),
        "iMAML": lambda: imaml(steps),
        "MAML (loop)": lambda: ml.MAML(mlp(), F.mse_loss, INNER_LR, steps, vectorize="loop"),
        "MAML (higher)": lambda: ml.MAML(mlp(), F.mse_loss, INNER_LR, steps, backend="higher"),
        "Reptile (higher)": lambda: ml.Reptile(
            mlp(), F.mse_loss, INNER_LR, steps, backend="higher"
        ),
    }


def conv_factories() -> dict[str, Callable[[], ml.Learner]]:
    def conv() -> torch.nn.Module:
        return ml.models.Conv4(in_channels=1, n_classes=5, hidden=32, image_size=28)

    return {
        "MAML (func, loop)": lambda: ml.MAML(conv(), F.cross_entropy, 0.4, 1, vectorize="loop"),
        "MAML (func, vmap)": lambda: ml.MAML(conv(), F.cross_entropy, 0.4, 1, vectorize="vmap"),
        "MAML (higher)": lambda: ml.MAML(conv(), F.cross_entropy, 0.4, 1, backend="higher"),
        "ANIL (func, loop)": lambda: ml.ANIL(conv(), F.cross_entropy, 0.4, 1, vectorize="loop"),
        "Reptile (func, loop)": lambda: ml.Reptile(
            conv(), F.cross_entropy, 0.4, 1, vectorize="loop"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=3000, help="meta-iterations each")
    parser.add_argument("--eval-tasks", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=30, help="timed meta-steps per learner")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (tiny tensors: 1 is best)"
    )
    parser.add_argument("--no-conv", action="store_true", help="skip the Conv-4 speed table")
    parser.add_argument(
        "--learners", help="comma-separated rows of the main table to run (default: all)"
    )
    parser.add_argument("--no-speed", action="store_true", help="skip the speed tables")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# sine learners: {args.iterations} meta-iterations, meta-batch 25, K=10, "
        f"{args.eval_tasks} test tasks, seed {args.seed}; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {args.threads} thread(s)\n"
    )
    batch = ml.tasks.Sine(10, 10).sample(25, torch.Generator().manual_seed(args.seed))
    factories = learners(args.iterations)
    if args.learners:
        wanted = [n.strip() for n in args.learners.split(",")]
        unknown = sorted(set(wanted) - set(factories))
        if unknown:
            parser.error(f"--learners: unknown {unknown}; choose from {sorted(factories)}")
        factories = {n: factories[n] for n in wanted}
    if args.iterations > 0:
        times = meta_step_times(
            {n: (lambda f=f: f()[0]) for n, f in factories.items()}, args.rounds, batch
        )
        print(
            "| learner | protocol | MSE, 1 step | MSE, 10 steps "
            "| meta-step (ms), this protocol | tasks/s |"
        )
        print("|---|---|---|---|---|---|")
        test_tasks = ml.tasks.Sine(10, 100, query_grid=True)
        for name, make in factories.items():
            torch.manual_seed(args.seed)
            learner, protocol = make()
            try:
                train(learner, args.iterations, args.seed)
            except ml.DivergenceError as e:
                cells = [f"training diverged at iteration {e.iteration}", "-"]
            else:
                result = ml.evaluate(learner, test_tasks, args.eval_tasks, steps=[1, 10], seed=0)
                cells = [mse_cell(result, s) for s in (1, 10)]
            print(
                f"| {name} | {protocol} | {cells[0]} | {cells[1]} | {times[name] * 1e3:.1f} | "
                f"{25 / times[name]:.0f} |",
                flush=True,
            )
        for name in NOT_APPLICABLE if not args.learners else ():
            print(f"| {name} | not applicable (classification) | - | - | - | - |")
    if args.no_speed:
        return
    for steps in (1, 5):
        times = meta_step_times(speed_factories(steps), args.rounds, batch)
        print(f"\n## meta-step time, MLP 1-40-40-1, 25 tasks, {steps} inner step(s)\n")
        print("| learner | ms / meta-step | tasks/s | vs MAML |")
        print("|---|---|---|---|")
        for name, t in times.items():
            print(f"| {name} | {t * 1e3:.1f} | {25 / t:.0f} | {t / times['MAML']:.2f}x |")
    if not args.no_conv:
        g = torch.Generator().manual_seed(args.seed)
        x = torch.randn(4, 5, 1, 28, 28, generator=g)
        y = torch.arange(5).expand(4, 5).contiguous()
        conv_batch = ml.tasks.TaskBatch.from_tensors(x, y, x.clone(), y.clone())
        times = meta_step_times(conv_factories(), max(3, args.rounds // 5), conv_batch)
        print("\n## meta-step time, Conv-4 (hidden 32, 28x28), 4 tasks of 5-way 1-shot, 1 step\n")
        print("| learner | ms / meta-step |")
        print("|---|---|")
        for name, t in times.items():
            print(f"| {name} | {t * 1e3:.1f} |")


if __name__ == "__main__":
    main()
