import pytest
import torch

from metalearn.tasks import Split, TaskBatch


def make(tasks=3, k=4, q=6, d=2):
    return TaskBatch.from_tensors(
        torch.randn(tasks, k, d),
        torch.randn(tasks, k, 1),
        torch.randn(tasks, q, d),
        torch.randn(tasks, q, 1),
    )


def test_shapes_and_task_view():
    b = make()
    assert b.num_tasks == len(b) == 3
    t = b.task(1)
    assert t.support.x.shape == (4, 2) and t.query.y.shape == (6, 1)
    assert torch.equal(t.support.x, b.support.x[1])
    assert isinstance(t.support, Split)
    assert [u.support.x.shape[0] for u in b] == [4, 4, 4]
    with pytest.raises(IndexError, match="out of range"):
        b.task(3)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (
            (
                torch.zeros(3, 4, 1),
                torch.zeros(2, 4, 1),
                torch.zeros(3, 5, 1),
                torch.zeros(3, 5, 1),
            ),
            "support_y has 2 tasks",
        ),
        (
            (
                torch.zeros(3, 4, 1),
                torch.zeros(3, 3, 1),
                torch.zeros(3, 5, 1),
                torch.zeros(3, 5, 1),
            ),
            "support_x has 4 shots",
        ),
        (
            (
                torch.zeros(3, 4, 2),
                torch.zeros(3, 4, 1),
                torch.zeros(3, 5, 1),
                torch.zeros(3, 5, 1),
            ),
            "query_x examples",
        ),
        (
            (
                torch.zeros(3, 4, 1),
                torch.zeros(3, 4, 1),
                torch.zeros(3, 5, 1),
                torch.zeros(3, 5, 2),
            ),
            "query_y targets",
        ),
        (
            (torch.zeros(4), torch.zeros(3, 4, 1), torch.zeros(3, 5, 1), torch.zeros(3, 5, 1)),
            "support_x must have shape",
        ),
    ],
)
def test_from_tensors_rejects_mismatched_shapes(args, match):
    with pytest.raises(ValueError, match=match):
        TaskBatch.from_tensors(*args)


def test_from_tensors_rejects_non_tensors():
    with pytest.raises(TypeError, match="query_y must be a torch.Tensor"):
        TaskBatch.from_tensors(
            torch.zeros(1, 2, 1), torch.zeros(1, 2, 1), torch.zeros(1, 2, 1), [[0.0]]
        )


def test_to_keeps_integer_labels_and_moves_floats():
    b = TaskBatch.from_tensors(
        torch.randn(2, 3, 4),
        torch.tensor([[0, 1, 2]] * 2),
        torch.randn(2, 3, 4),
        torch.tensor([[2, 1, 0]] * 2),
    )
    d = b.to(dtype=torch.float64)
    assert d.support.x.dtype == torch.float64 and d.support.y.dtype == torch.int64
    c = b.to("cpu")
    assert c.query.y.dtype == torch.int64


def test_chunk_and_concat_round_trip():
    b = TaskBatch.from_tensors(
        torch.randn(5, 2, 1),
        torch.randn(5, 2, 1),
        torch.randn(5, 3, 1),
        torch.randn(5, 3, 1),
        info={"amplitude": torch.arange(5.0)},
    )
    parts = b.chunk(2)
    assert [p.num_tasks for p in parts] == [2, 2, 1]
    back = TaskBatch.concat(parts)
    assert torch.equal(back.query.y, b.query.y) and torch.equal(
        back.info["amplitude"], b.info["amplitude"]
    )
    with pytest.raises(ValueError, match="size"):
        b.chunk(0)
