"""Few-shot learning on real Omniglot, minimal setting: meta-train on 5 alphabets, test on 3 new.

Meta-train on the 136 characters of ``images_background_small1`` (Balinese, Early_Aramaic,
Greek, Korean, Latin; each also rotated by 90/180/270 degrees as new classes), then evaluate
N-way 1-shot on the 106 characters of the three alphabets only ``images_background_small2``
has (Japanese_(katakana), Sanskrit, Tagalog; unrotated): tasks of any classes and tasks whose
classes all come from one alphabet (Lake et al.'s harder protocol; Tagalog's 17 characters
cannot make a 20-way within-alphabet task). 600 test tasks, mean ± 95% CI, 10 steps.

One command per row of the results table (docs/results.md):

    python examples/omniglot_minimal.py --root DATA \
        --config configs/omniglot_minimal/maml_20way.yaml
    python examples/omniglot_minimal.py --root DATA --learner pixel-nn --ways 20

``DATA`` holds ``images_background_small1.zip`` and ``images_background_small2.zip`` (or the
extracted folders) of the Omniglot release. Learners: maml, fomaml, anil, reptile, metasgd,
mamlpp, pretrain (Finn et al.'s pooled tasks), pretrain-global (Chen et al. 2019's
"Baseline": a classifier of all training classes, then a new head fine-tuned on the support
set), protonet, protomaml, unicorn (UNICORN-MAML: every head row starts at one learned row;
zero-head: that row fixed at zero), imaml (``--lam``: proximal strength) and cavia (the
context, ``--context-size``, enters Conv-4's third block by FiLM: ``ml.models.FiLMConv4``);
baselines: pixel-nn (nearest neighbour on pixels) and scratch (the same
Conv-4, randomly initialised, trained on the support set only).

``--test-ways 20 5`` evaluates one meta-training at several N: a learner meta-trained 20-way
is tested 5-way with the first 5 units of its output layer (training assigns labels to
units in random order, so the units are alike). Each N writes its own JSON; a meta-trained
learner's ``state_dict`` is saved beside it (``maml_20way.pt``). ``--load maml_20way.pt``
evaluates that learner again without meta-training (``--init maml_20way.pt`` meta-trains it
on, a warm restart whose row adds the earlier run's iterations and time), e.g. with
``--test-support-copies 4``: each test task's support set also holds 4 distorted copies of
every drawing (``ml.tasks.AugmentSupport``, the training distortions), on the same test tasks,
and ``--test-query-copies 8`` averages each query's predicted class probabilities over the
query drawing and 8 distorted copies of it (test-time augmentation; the JSON also keeps the
accuracy of the undistorted queries alone, from the same adapted weights). ``--device cuda``
meta-trains and tests the learner on a GPU (``benchmarks/gpu_omniglot.sh`` runs the mirrored
20-way row that way in one call).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import metalearn as ml
from metalearn.training.evaluate import task_seed
from metalearn.training.experiment import resolve_device

LEARNERS = (
    "maml", "fomaml", "anil", "reptile", "metasgd", "mamlpp", "pretrain",
    "protonet", "protomaml", "unicorn", "zero-head", "imaml", "cavia", "pretrain-global",
)  # fmt: skip
BASELINES = ("pixel-nn", "scratch")
PROTOCOLS = ("any-class", "within-alphabet")


def distortions() -> ml.tasks.RandomAffine:
    """The small affine distortions of ``--augment`` (and of ``--test-support-copies``)."""
    return ml.tasks.RandomAffine(degrees=10, scale=0.1, translate=0.1)


class TimeBudgetSpent(Exception):
    """Raised by the training callback when ``--max-minutes`` have passed."""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", help="folder with images_background_small1/2")
    p.add_argument(
        "--report", metavar="DIR",
        help="no training: print the Markdown table of the JSON results in DIR and plot curves",
    )  # fmt: skip
    p.add_argument("--config", help="YAML file of these options (command line wins)")
    p.add_argument("--learner", choices=LEARNERS + BASELINES, default="maml")
    p.add_argument("--ways", type=int, default=20, help="N, for training and testing")
    p.add_argument(
        "--test-ways", type=int, nargs="+",
        help="N of the test tasks (default: --ways); a smaller N keeps the first N output units",
    )  # fmt: skip
    p.add_argument("--queries", type=int, default=5, help="query images per class in training")
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument(
        "--max-minutes", type=float, default=0,
        help="stop meta-training after this wall time (0: none); the JSON records the iterations",
    )  # fmt: skip
    p.add_argument("--meta-batch", type=int, default=16)
    p.add_argument("--inner-steps", type=int, default=1)
    p.add_argument("--inner-lr", type=float, default=0.4)
    p.add_argument("--first-order", action="store_true", help="MAML without second order")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's meta learning rate")
    p.add_argument(
        "--lr-schedule", choices=("constant", "cosine"), default="constant",
        help="cosine: the meta learning rate decays to 0 over --iterations",
    )  # fmt: skip
    p.add_argument(
        "--schedule-iterations", type=int, default=0,
        help="iterations the cosine spans (0: --iterations); --iterations DONE "
        "--schedule-iterations PLANNED repeats a run that --max-minutes stopped early",
    )  # fmt: skip
    p.add_argument("--lam", type=float, default=1.0, help="imaml: proximal strength")
    p.add_argument("--context-size", type=int, default=100, help="cavia: context parameters")
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="random affine distortions of the training characters",
    )
    p.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also train on every character reflected left to right (twice the classes)",
    )
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument(
        "--downsample",
        choices=("maxpool", "stride"),
        default="maxpool",
        help="Conv-4's max-pooling, or Finn et al.'s strided convolutions (about 3.5x cheaper)",
    )
    p.add_argument("--test-steps", type=int, default=10)
    p.add_argument(
        "--test-support-copies", type=int, default=0, metavar="M",
        help="add M distorted copies of each support drawing at test (same tasks otherwise)",
    )  # fmt: skip
    p.add_argument(
        "--test-query-copies", type=int, default=0, metavar="M",
        help="average each query's class probabilities over it and M distorted copies",
    )  # fmt: skip
    p.add_argument(
        "--load", metavar="FILE",
        help="no meta-training: evaluate the state_dict an earlier run saved (its options)",
    )  # fmt: skip
    p.add_argument(
        "--init", metavar="FILE",
        help="meta-train on from the state_dict an earlier run saved (a warm restart: a fresh "
        "Adam, this run's --lr and schedule; give another --seed for new tasks)",
    )  # fmt: skip
    p.add_argument("--test-queries", type=int, default=5, help="query images per class at test")
    p.add_argument("--test-tasks", type=int, default=600)
    p.add_argument(
        "--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS),
        help="test tasks of any classes and/or of one alphabet",
    )  # fmt: skip
    p.add_argument("--curve-every", type=int, default=100, help="0: no learning curve")
    p.add_argument("--curve-tasks", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--device", default="cpu",
        help="torch device of the learner (cpu, cuda, cuda:1, auto); tasks are drawn on the CPU",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/omniglot_minimal", help="folder for JSON and PNG")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not args.root and not args.report:
        p.error("--root is required (the folder holding the Omniglot minimal sets)")
    if args.config:
        import yaml

        options = yaml.safe_load(Path(args.config).read_text()) or {}
        unknown = sorted(set(options) - set(vars(args)))
        if unknown:
            p.error(f"{args.config}: unknown option(s) {unknown}")
        # What the command line names explicitly wins, even when it equals the default.
        explicit = argparse.Namespace()
        for action in p._actions:
            action.default = argparse.SUPPRESS
        p.parse_args(argv, namespace=explicit)
        given = set(vars(explicit))
        for key, value in options.items():
            if key not in given:
                setattr(args, key, value)
    return args


def conv4(args: argparse.Namespace, n_classes: int) -> ml.models.Conv4:
    """Conv-4 on 28x28 characters with the options' width and downsampling."""
    return ml.models.Conv4(
        1, n_classes, hidden=args.hidden, image_size=28, downsample=args.downsample
    )


def build_learner(args: argparse.Namespace) -> ml.Learner:
    model = conv4(args, args.ways)
    common = {"inner_lr": args.inner_lr, "inner_steps": args.inner_steps}
    name = args.learner
    if name == "protonet":
        return ml.ProtoNet(model, embedding="body")
    if name == "protomaml":
        return ml.ProtoMAML(model, F.cross_entropy, first_order=args.first_order, **common)
    if name in ("unicorn", "zero-head"):
        init = "learned" if name == "unicorn" else "zero"
        return ml.UnicornMAML(
            model, F.cross_entropy, first_order=args.first_order, head_init=init, **common
        )
    if name == "imaml":
        return ml.IMAML(model, F.cross_entropy, lam=args.lam, **common)
    if name == "cavia":
        if args.downsample != "maxpool":
            raise SystemExit("--downsample stride: CAVIA's FiLMConv4 has max-pooling only")
        size = args.context_size
        film = ml.models.FiLMConv4(1, args.ways, args.hidden, 28, context_size=size)
        return ml.CAVIA(
            film, F.cross_entropy, first_order=args.first_order, context_size=size, **common
        )
    if name in ("maml", "scratch"):
        return ml.MAML(model, F.cross_entropy, first_order=args.first_order, **common)
    if name == "fomaml":
        return ml.FOMAML(model, F.cross_entropy, **common)
    if name == "anil":
        return ml.ANIL(model, F.cross_entropy, head="head", **common)
    if name == "reptile":
        return ml.Reptile(model, F.cross_entropy, **common)
    if name == "metasgd":
        return ml.MetaSGD(model, F.cross_entropy, **common)
    if name == "mamlpp":
        return ml.MAMLPlusPlus(model, F.cross_entropy, **common)
    if name == "pretrain-global":
        return head_only(args, model)
    return ml.Pretrain(model, F.cross_entropy, **common)


def lr_schedule(
    args: argparse.Namespace, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``--lr-schedule``: None (constant) or a cosine decay to 0 over ``--schedule-iterations``
    (default ``--iterations``)."""
    if args.schedule_iterations < 0:
        raise SystemExit(f"--schedule-iterations {args.schedule_iterations}: must be >= 0")
    if args.lr_schedule == "cosine":
        span = args.schedule_iterations or args.iterations
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, span)
    if args.schedule_iterations:
        raise SystemExit("--schedule-iterations: only with --lr-schedule cosine")
    return None


def head_only(args: argparse.Namespace, model: ml.models.Conv4) -> ml.Pretrain:
    """The few-shot learner of pretrain-global: fine-tunes only ``model``'s head."""
    return ml.Pretrain(
        model, F.cross_entropy, args.inner_lr, args.inner_steps, adapt=["head.weight", "head.bias"]
    )


def narrowed(learner: ml.Learner, args: argparse.Namespace, ways: int) -> ml.Learner:
    """The trained learner for ``ways``-way tasks (``ways <= args.ways``): the first ``ways``
    output units of its head, and of whatever else is shaped like the head (Meta-SGD's rates).

    Meta-training gives a task's classes the labels ``0..N-1`` in a fresh random order, so the
    N output units are trained alike and any ``ways`` of them make a ``ways``-way classifier
    (Snell et al. 2017 found training with more ways than testing helps prototypical networks).
    """
    if ways == args.ways:
        return learner
    if ways > args.ways:
        raise SystemExit(f"--test-ways {ways}: cannot test more ways than --ways {args.ways}")
    small = build_learner(argparse.Namespace(**{**vars(args), "ways": ways}))
    state = learner.state_dict()
    for name, target in small.state_dict().items():
        value = state[name]
        if isinstance(value, torch.Tensor) and value.shape != target.shape:
            if value.shape[1:] != target.shape[1:] or value.shape[0] != args.ways:
                raise SystemExit(f"{name}: cannot narrow {tuple(value.shape)} to {ways} ways")
            state[name] = value[:ways]
    small.load_state_dict(state)
    return small.to(next(learner.parameters()).device)


def pretrain_global(
    args: argparse.Namespace,
    train: ml.datasets.ImageClasses,
    callback: Callable[[int, dict[str, float]], None],
) -> ml.Learner:
    """Chen et al. (2019)'s "Baseline": a classifier of every training class, then a new head.

    Conv-4 with a head over all of ``train``'s classes (544 for the minimal set with rotations)
    is trained on their global labels by minibatches of Adam; an iteration sees as many images
    as a meta-iteration of the episodic learners (``meta_batch * ways * (1 + queries)``). The
    returned learner has the trained body and a zero ``ways``-way head, and fine-tunes only the
    head on a test task's support set (``inner_lr``, ``test_steps`` at evaluation).
    """
    images = torch.cat([train.images(c) for c in range(train.num_classes)])
    labels = torch.repeat_interleave(
        torch.arange(train.num_classes), torch.from_numpy(train.class_sizes)
    )
    net = conv4(args, train.num_classes)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    schedule = lr_schedule(args, optimizer)
    generator = torch.Generator().manual_seed(args.seed)
    size = min(len(images), args.meta_batch * args.ways * (1 + args.queries))
    for iteration in range(args.iterations):
        rows = torch.randperm(len(images), generator=generator)[:size]
        logits = net(images[rows])
        loss = F.cross_entropy(logits, labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        accuracy = (logits.argmax(1) == labels[rows]).float().mean().item()
        try:
            callback(iteration, {"loss": loss.item(), "accuracy": accuracy})
        except TimeBudgetSpent:
            print(f"time budget spent after {iteration + 1} iterations", flush=True)
            break
    model = conv4(args, args.ways)
    model.body.load_state_dict(net.body.state_dict())
    model.reset_head()
    return head_only(args, model)


def pixel_nearest_neighbour(tasks: ml.tasks.TaskSampler, num_tasks: int) -> ml.Evaluation:
    """Query accuracy of 1-nearest-neighbour on raw pixels (Euclidean), per test task.

    The tasks are those :func:`metalearn.evaluate` draws (seed 0), so rows compare task by task.
    """
    seeds = [task_seed(0, i) for i in range(num_tasks)]
    batch = ml.tasks.TaskBatch.concat(
        [tasks.sample(1, generator=torch.Generator().manual_seed(s)) for s in seeds]
    )
    support = batch.support.x.flatten(2)
    query = batch.query.x.flatten(2)
    nearest = torch.cdist(query, support).argmin(-1)
    predicted = batch.support.y.gather(1, nearest)
    accuracy = (predicted == batch.query.y).double().mean(1, keepdim=True)
    return ml.Evaluation((0,), {"accuracy": accuracy})


def evaluate_query_copies(
    learner: ml.Learner,
    tasks: ml.tasks.TaskSampler,
    num_tasks: int,
    steps: int,
    copies: int,
    progress: bool = False,
) -> ml.Evaluation:
    """Query accuracy with test-time augmentation: each query's prediction averages the class
    probabilities of the adapted network on the query drawing and ``copies`` distorted copies.

    The tasks are those :func:`metalearn.evaluate` draws (seed 0), each adapted once with
    ``steps`` steps; ``accuracy_single`` is the accuracy of the undistorted queries alone under
    the same adapted weights (a paired comparison). Each set of copies is its own forward pass,
    so a network with batch statistics normalises it as it does the plain queries.
    """
    augment = distortions()
    device = next(learner.parameters()).device
    metrics: dict[str, list[torch.Tensor]] = {"accuracy": [], "accuracy_single": []}
    for i in tqdm(range(num_tasks), "test tasks", disable=not progress, mininterval=30):
        task = tasks.sample(1, generator=torch.Generator().manual_seed(task_seed(0, i))).task(0)
        distort = torch.Generator().manual_seed(task_seed(1, i))  # not the task's own stream
        query, labels = task.query.x, task.query.y.to(device)
        with torch.no_grad():
            params = learner.adapt(task.support.to(device), steps)
            single = learner.predict(params, query.to(device), steps).softmax(-1)
            mean = single.clone()
            for _ in range(copies):  # distorted on the CPU: the same copies on every device
                copy = augment(query, distort).to(device)
                mean += learner.predict(params, copy, steps).softmax(-1)
        for name, probs in (("accuracy", mean), ("accuracy_single", single)):
            # float32 means, as ml.evaluate takes them: the same numbers for the same hits
            hits = (probs.argmax(-1) == labels).float().mean().double()
            metrics[name].append(hits.cpu())
    return ml.Evaluation((steps,), {k: torch.stack(v)[:, None] for k, v in metrics.items()})


def test_samplers(
    root: str, ways: int, queries: int, protocols: list[str], copies: int = 0
) -> dict[str, ml.tasks.TaskSampler]:
    """The test-task sampler of each protocol; ``copies`` distorted copies of the support."""
    test = ml.datasets.Omniglot(root, "test", "minimal", rotations=(0,))
    groups = {"any-class": None, "within-alphabet": test.class_groups}
    samplers = {}
    for p in protocols:
        tasks = ml.tasks.FewShot(test, ways, 1, queries, groups=groups[p])
        samplers[p] = ml.tasks.AugmentSupport(tasks, distortions(), copies) if copies else tasks
    return samplers


def test_variant(options: dict) -> tuple[str, str]:
    """A file-name suffix and a label for a test with support or query copies, or of a loaded
    learner.

    Such a row sits beside the training's own (same learner and N), so its file name and its
    label in the table say how its test was run: ``maml_20way_support4_steps40.json``,
    "support + 4 distorted copies, 40 test steps". Both are empty for a standard row.
    """
    tag, label = "", []
    copies = options.get("test_support_copies", 0)
    if copies:
        tag += f"_support{copies}"
        label.append(f"support + {copies} distorted copies")
    query_copies = options.get("test_query_copies", 0)
    if query_copies:
        tag += f"_queries{query_copies}"
        label.append(f"each query averaged with {query_copies} distorted copies")
    if (copies or query_copies or options.get("load")) and options["learner"] != "pixel-nn":
        steps = options["test_steps"]
        tag += f"_steps{steps}"
        label.append(f"{steps} test steps")
    return tag, ", ".join(label)


def load_trained(args: argparse.Namespace, learner: ml.Learner, option: str = "load") -> dict:
    """Load ``--load``'s (or ``--init``'s) state_dict into ``learner``; the training record of
    the JSON beside it.

    Returns ``iterations`` and ``train_seconds`` of the run that saved the file (from its JSON
    of the same name), so the table row still says what the training cost.
    """
    path = Path(getattr(args, option))
    flag = f"--{option} {path}"
    if not path.is_file():
        raise SystemExit(f"{flag}: no such file (a run saves {args.learner}_<N>way.pt)")
    try:
        learner.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as error:
        raise SystemExit(
            f"{flag}: not a state_dict of {args.learner} with these options "
            f"(--ways, --hidden, --downsample must match the saving run): {error}"
        ) from None
    record = path.with_suffix(".json")
    if not record.is_file():
        print(f"warning: {record} is missing: the row cannot say what the training cost")
        return {"iterations": 0, "train_seconds": 0.0}
    saved = json.loads(record.read_text())
    return {"iterations": saved["iterations_done"], "train_seconds": saved["train_seconds"]}


def report(folder: Path) -> str:
    """The Markdown table of every ``*.json`` result in ``folder``; curves to ``curves.png``."""
    results = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
    if not results:
        raise SystemExit(f"no results (*.json) in {folder}")
    order = {name: i for i, name in enumerate(LEARNERS + BASELINES)}
    results.sort(key=lambda r: (r["ways"], order[r["learner"]], r.get("train_ways", r["ways"])))
    lines = [
        "| learner | N-way | any-class | within-alphabet | iterations | wall time (min) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = []
        for protocol in PROTOCOLS:
            a = r["accuracy"].get(protocol)
            cells.append(f"{100 * a['mean']:.1f} ± {100 * a['ci95']:.1f}" if a else "-")
        trained = r["learner"] not in BASELINES
        name = r["learner"]
        if trained and r.get("train_ways", r["ways"]) != r["ways"]:
            name += f" (meta-trained {r['train_ways']}-way)"
        variant = test_variant(r["options"])[1]
        if variant:
            name += f" ({variant})"
        iterations = r.get("iterations_done") or r["options"]["iterations"] if trained else "-"
        lines.append(
            f"| {name} | {r['ways']} | {cells[0]} | {cells[1]} | {iterations} | "
            f"{r['seconds'] / 60:.1f} |"
        )
    curves = [r for r in results if r["curve"]]
    if curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ways = sorted({r["ways"] for r in curves})
        fig, axes = plt.subplots(1, len(ways), figsize=(5.5 * len(ways), 4), squeeze=False)
        for ax, n in zip(axes[0], ways, strict=True):
            for r in (r for r in curves if r["ways"] == n):
                its = [p["iteration"] for p in r["curve"]]
                # One colour and line style per learner, the same in every panel.
                i = order[r["learner"]]
                style = {"color": f"C{i % 10}", "linestyle": "-" if i < 10 else "--"}
                accuracy = [100 * p["test_accuracy"] for p in r["curve"]]
                ax.plot(its, accuracy, label=r["learner"], **style)
            ax.set(title=f"{n}-way 1-shot, unseen alphabets", xlabel="meta-iteration",
                   ylabel="test accuracy (%)")  # fmt: skip
            ax.axhline(100 / n, color="grey", linestyle=":", label="chance")
            ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "curves.png", dpi=110)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run one row (or print the report); returns the summary of the first ``--test-ways``."""
    args = parse(argv)
    if args.report:
        print(report(Path(args.report)))
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test_ways = args.test_ways or [args.ways]
    started = time.perf_counter()
    curve: list[dict] = []
    trained = {"iterations": 0}
    train_seconds = 0.0
    variant, variant_label = test_variant(vars(args))
    if args.load and args.learner in BASELINES:
        raise SystemExit(f"--load: the {args.learner} baseline has no meta-trained state")
    if args.init and (args.load or args.learner in (*BASELINES, "pretrain-global")):
        what = "--load (which does not meta-train)" if args.load else args.learner
        raise SystemExit(f"--init: cannot go with {what}; it continues an episodic meta-training")
    if args.test_query_copies < 0:
        raise SystemExit(f"--test-query-copies {args.test_query_copies}: must be >= 0")
    if args.test_query_copies and args.learner == "pixel-nn":
        raise SystemExit("--test-query-copies: pixel-nn has no class probabilities to average")
    try:
        device = resolve_device(args.device)
    except ValueError as error:  # metalearn.config.ConfigError
        raise SystemExit(f"--{error}") from None
    if device.type != "cpu" and args.learner in ("pixel-nn", "pretrain-global"):
        raise SystemExit(f"--device {args.device}: {args.learner} runs on the CPU only")
    if args.learner != "pixel-nn":
        learner = build_learner(args).to(device)
        if args.load:
            record = load_trained(args, learner)
            trained["iterations"], train_seconds = record["iterations"], record["train_seconds"]
            started -= train_seconds  # the row's wall time: the saved training's and this test's
        elif args.learner != "scratch":
            earlier = {"iterations": 0, "train_seconds": 0.0}
            if args.init:  # a warm restart: the row counts the earlier run's work as well
                earlier = load_trained(args, learner, "init")
            train = ml.datasets.Omniglot(args.root, "train", "minimal", mirror=args.mirror)
            augment = distortions()
            tasks = ml.tasks.FewShot(
                train, args.ways, 1, args.queries, augment=augment if args.augment else None
            )
            # Probe tasks have the training N, so the curve needs no narrowing.
            probe = test_samplers(args.root, args.ways, args.test_queries, args.protocols[:1])
            probe = next(iter(probe.values()))
            deadline = started + 60 * args.max_minutes if args.max_minutes > 0 else None
            started -= earlier["train_seconds"]

            # pretrain-global builds its few-shot head only at the end: no curve to probe.
            probing = args.curve_every and args.learner != "pretrain-global"

            def log(iteration: int, metrics: dict[str, float]) -> None:
                done = iteration + 1
                trained["iterations"] = earlier["iterations"] + done
                if probing and (done % args.curve_every == 0 or done == 1):
                    result = ml.evaluate(learner, probe, args.curve_tasks, args.test_steps, seed=1)
                    point = {
                        "iteration": trained["iterations"],
                        "seconds": round(time.perf_counter() - started, 1),
                        "train_accuracy": metrics.get("accuracy"),
                        "test_accuracy": result.summary("accuracy")[0],
                    }
                    curve.append(point)
                    print(json.dumps(point), flush=True)
                late = deadline is not None and time.perf_counter() > deadline
                if late and done < args.iterations:
                    raise TimeBudgetSpent  # after a whole meta-update: the learner is consistent

            try:
                if args.learner == "pretrain-global":
                    learner = pretrain_global(args, train, log)
                else:
                    optimizer = torch.optim.Adam(learner.parameters(), lr=args.lr)
                    schedule = lr_schedule(args, optimizer)
                    ml.train(
                        learner, tasks, optimizer, args.iterations, args.meta_batch,
                        seed=args.seed, progress=not args.no_progress, callback=log,
                        scheduler=schedule,
                    )  # fmt: skip
            except TimeBudgetSpent:
                done = trained["iterations"] - earlier["iterations"]
                print(f"time budget spent after {done} iterations", flush=True)
            train_seconds = time.perf_counter() - started
            # The meta-trained learner, to evaluate again or adapt to new characters.
            torch.save(learner.state_dict(), out / f"{args.learner}_{args.ways}way.pt")
    summaries = []
    for ways in test_ways:
        results: dict[str, tuple[float, float]] = {}
        tests = test_samplers(
            args.root, ways, args.test_queries, args.protocols, args.test_support_copies
        )
        model = None if args.learner == "pixel-nn" else narrowed(learner, args, ways)
        single: dict[str, tuple[float, float]] = {}
        for name, sampler in tests.items():
            if model is None:
                result = pixel_nearest_neighbour(sampler, args.test_tasks)
            elif args.test_query_copies:
                result = evaluate_query_copies(
                    model, sampler, args.test_tasks, args.test_steps, args.test_query_copies,
                    progress=not args.no_progress,
                )  # fmt: skip
                single[name] = result.summary("accuracy_single")
            else:
                result = ml.evaluate(model, sampler, args.test_tasks, args.test_steps)
            results[name] = result.summary("accuracy")
        seconds = time.perf_counter() - started
        summary = {
            "learner": args.learner,
            "ways": ways,
            "train_ways": args.ways,
            "options": {k: v for k, v in vars(args).items() if k not in ("root", "out")},
            "accuracy": {k: {"mean": m, "ci95": c} for k, (m, c) in results.items()},
            # With --test-query-copies: the undistorted queries alone, same adapted weights.
            "accuracy_single": {k: {"mean": m, "ci95": c} for k, (m, c) in single.items()},
            "iterations_done": trained["iterations"],
            "train_seconds": train_seconds,
            "seconds": seconds,
            "threads": torch.get_num_threads(),
            # One curve per training, on the row of its own test (a loaded learner has none).
            "curve": curve if ways == args.ways and not variant else [],
        }
        tag = f"{args.learner}_{args.ways}way" + ("" if ways == args.ways else f"_test{ways}way")
        tag += variant
        (out / f"{tag}.json").write_text(json.dumps(summary, indent=1))
        steps = "" if args.learner == "pixel-nn" else f", {args.test_steps} steps"
        trained_on = "" if ways == args.ways else f" (meta-trained {args.ways}-way)"
        if variant:
            trained_on += f" ({variant_label})"
        for name, (mean, ci) in results.items():
            print(
                f"{args.learner}{trained_on} {ways}-way 1-shot {name}: {100 * mean:.1f} ± "
                f"{100 * ci:.1f}% ({args.test_tasks} tasks{steps})"
            )
            if name in single:
                m, c = single[name]
                print(f"  the undistorted queries alone: {100 * m:.1f} ± {100 * c:.1f}%")
        summaries.append(summary)
    print(f"wall time {seconds / 60:.1f} min ({torch.get_num_threads()} threads) -> {out}")
    return summaries[0]


if __name__ == "__main__":
    main()
