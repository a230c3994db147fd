"""A new algorithm in one file: MAML with a proximal inner objective (docs/new_algorithm.md).

iMAML (Rajeswaran et al. 2019) adapts each task with a proximal term that keeps the fast
weights near the initialisation, ``L_support(theta) + (lam / 2) * ||theta - phi||^2``, and
differentiates the solution implicitly. This learner keeps the proximal inner objective but
differentiates through the unrolled steps like MAML, so it is a few lines on public names:

1. the inner loop descends :meth:`~metalearn.Learner.inner_objective`, here the learner's
   objective (the loss of the forward) plus the proximal term around the starting point
   ``phi``; the query loss stays the plain :meth:`~metalearn.Learner.objective`;
2. everything else (the update rule, which parameters adapt, backends, vmap over tasks, first
   order, evaluation) is inherited from :class:`metalearn.Learner`.

Run:  python examples/new_algorithm.py --iterations 2000
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import metalearn as ml
from metalearn.tasks import Split


class ProximalMAML(ml.Learner):
    """MAML whose inner loop minimises ``L_support(theta) + (lam / 2) ||theta - phi||^2``.

    Args:
        model, loss, inner_lr, inner_steps: as for :class:`metalearn.MAML`.
        lam: strength of the pull toward the initialisation phi (0 gives MAML).
        **kwargs: the shared keywords of :class:`metalearn.Learner` (``first_order``,
            ``adapt``, ``update``, ``objective``, ``vectorize``, ``backend``).

    Reference:
        Rajeswaran, Finn, Kakade, Levine. Meta-Learning with Implicit Gradients. NeurIPS 2019.
    """

    def __init__(
        self,
        model: nn.Module,
        loss,
        inner_lr: float,
        inner_steps: int = 1,
        *,
        lam: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(model, loss, inner_lr, inner_steps, **kwargs)
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or lam < 0:
            raise ValueError(f"lam must be a number >= 0, got {lam!r}")
        self.lam = float(lam)

    def inner_objective(self, params: dict[str, Tensor], steps: int):
        phi = {k: params[k] for k in self.adapt_names}  # the proximal centre, differentiable

        def proximal(theta: dict[str, Tensor], split: Split) -> Tensor:
            distance = sum((theta[k] - phi[k]).pow(2).sum() for k in phi)
            return self.objective(theta, split) + 0.5 * self.lam * distance

        return proximal


def main(argv: list[str] | None = None) -> ml.Evaluation:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--lam", type=float, default=0.5)
    parser.add_argument("--test-tasks", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a tiny MLP: extra threads only add synchronisation
    torch.manual_seed(args.seed)
    learner = ProximalMAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, 0.01, 5, lam=args.lam)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    ml.train(learner, ml.tasks.Sine(10, 10), optimizer, args.iterations, 25, progress=False)
    test_tasks = ml.tasks.Sine(10, 100, query_grid=True)
    result = ml.evaluate(learner, test_tasks, args.test_tasks, steps=[0, 1, 10])
    print(f"ProximalMAML (lam={args.lam}), {args.iterations} iterations (MSE):\n{result}")
    return result


if __name__ == "__main__":
    main()
