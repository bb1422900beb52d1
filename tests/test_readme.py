"""The README's example runs as written."""

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    assert "torch.Size([100, 100])" in capsys.readouterr().out


def test_readme_commands_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -c constraints.txt -e ".[dev]"' in text
    assert '-c constraints.txt -e ".[dev]"' in ci
    assert "python -m pytest" in text and "pytest" in ci


def test_every_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    for i, block in enumerate(blocks[1:], start=1):
        exec(compile(block, f"README.md block {i}", "exec"), {})
    out = capsys.readouterr().out
    assert "torch.Size([20, 20]) torch.Size([20, 10]) torch.Size([4, 4])" in out
