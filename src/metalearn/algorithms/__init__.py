"""Learners; each configures the one inner loop in :mod:`metalearn.algorithms.inner`."""

from metalearn.algorithms import updates
from metalearn.algorithms.anil import ANIL
from metalearn.algorithms.base import Learner, MetaOutput
from metalearn.algorithms.cavia import CAVIA
from metalearn.algorithms.custom_gradient import custom_meta_gradient
from metalearn.algorithms.imaml import IMAML
from metalearn.algorithms.implicit import conjugate_gradient, hvp
from metalearn.algorithms.inner import inner_loop, map_tasks, select_parameters
from metalearn.algorithms.maml import FOMAML, MAML
from metalearn.algorithms.mamlpp import MAMLPlusPlus
from metalearn.algorithms.metasgd import MetaSGD
from metalearn.algorithms.pretrain import Pretrain
from metalearn.algorithms.protomaml import ProtoMAML
from metalearn.algorithms.protonet import ProtoNet
from metalearn.algorithms.reptile import Reptile
from metalearn.algorithms.unicorn import UnicornMAML

__all__ = [
    "ANIL",
    "CAVIA",
    "FOMAML",
    "IMAML",
    "MAML",
    "Learner",
    "MAMLPlusPlus",
    "MetaOutput",
    "MetaSGD",
    "Pretrain",
    "ProtoMAML",
    "ProtoNet",
    "Reptile",
    "UnicornMAML",
    "conjugate_gradient",
    "custom_meta_gradient",
    "hvp",
    "inner_loop",
    "map_tasks",
    "select_parameters",
    "updates",
]
