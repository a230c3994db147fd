"""Docs build only: the docstrings' Sphinx roles become links, their ``Example:`` sections code.

The docstrings are Google style with Sphinx cross-reference roles (``:class:`TaskBatch```,
``:meth:`~metalearn.Trainer.fit```), which read well in ``help()`` and editors. mkdocstrings
would print the roles literally and render an ``Example:`` section as an admonition whose
``>>>`` lines run together into one paragraph. This griffe extension (``mkdocs.yml``:
``extensions: [scripts/griffe_sphinx_roles.py]``) rewrites each docstring before it is parsed:

- a role naming a ``metalearn`` object becomes an autorefs link, resolved like Python names in
  the docstring's scope (``TaskBatch`` in ``metalearn.tasks.sine`` is
  ``metalearn.tasks.batch.TaskBatch``); other targets (``torch.Tensor.to``) become code;
- ``Example:`` becomes ``Examples:``, the section griffe parses into ``>>>`` code blocks.
"""

from __future__ import annotations

import html
import re
from typing import Any

from griffe import Extension, NameResolutionError, Object

ROLE = re.compile(
    r":(?:py:)?(?P<kind>class|meth|func|attr|mod|data|exc|obj|const):`(?P<tilde>~?)"
    r"(?P<target>[^`]+)`"
)
EXAMPLE = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.MULTILINE)


def _resolve(obj: Object, target: str, module: bool) -> str | None:
    """The full path of ``target`` as seen from ``obj``'s docstring, or ``None``."""
    if not target.startswith("metalearn"):
        head, _, rest = target.partition(".")
        try:
            found = obj.members[head].path if head in obj.members else obj.resolve(head)
        except NameResolutionError:
            return None
        target = f"{found}.{rest}" if rest else found
    return _defined_at(obj, target, module)


def _defined_at(obj: Object, path: str, module: bool) -> str:
    """Where ``path`` is defined: ``metalearn.evaluate`` is a re-export of
    ``metalearn.training.evaluate.evaluate``, the path its documentation is registered under."""
    for _ in range(5):  # a re-export of a re-export...
        try:
            found = obj.modules_collection[path]
        except (KeyError, ValueError, AttributeError):  # not loaded, or not an object
            return path
        name = path.rsplit(".", 1)[-1]
        if not module and not found.is_alias and found.is_module and name in found.members:
            # A function re-exported under its module's name (training.evaluate.evaluate).
            path, found = f"{path}.{name}", found.members[name]
        if not found.is_alias:
            return path
        path = found.target_path
    return path


def convert(text: str, obj: Object) -> str:
    """``text`` with roles replaced and ``Example:`` headings renamed."""

    def role(match: re.Match[str]) -> str:
        target = match["target"].strip().rstrip("()")
        shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
        code = f"<code>{html.escape(shown)}</code>"
        path = _resolve(obj, target, module=match["kind"] == "mod")
        if path is None or not path.startswith("metalearn"):
            return code
        # optional: a target with no page of its own stays code instead of failing the build;
        # tests/test_docs.py checks that metalearn targets do link.
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    return EXAMPLE.sub(r"\g<indent>Examples:", ROLE.sub(role, text))


def _walk(obj: Object, seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if obj.docstring is not None:
        obj.docstring.value = convert(obj.docstring.value, obj)
    for member in obj.members.values():
        if not member.is_alias:
            _walk(member, seen)


class SphinxRoles(Extension):
    """Rewrite every docstring of a package once it is loaded (see the module docstring)."""

    def on_package(self, *, pkg: Any, **kwargs: Any) -> None:
        _walk(pkg, set())
