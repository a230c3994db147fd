"""The README's usage snippet runs as written (with a shorter loop), so it cannot rot."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_snippet_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    usage = blocks[0]
    assert "range(1000)" in usage and "num_tasks=600" in usage
    code = usage.replace("range(1000)", "range(3)").replace("num_tasks=600", "num_tasks=5")
    exec(compile(code, str(README), "exec"), {})
    assert "5 tasks" in capsys.readouterr().out
