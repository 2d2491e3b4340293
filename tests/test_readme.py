"""Every Python snippet of the README runs as written, in order, on the shipped toy."""

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_snippets_run():
    snippets = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(snippets) >= 5
    namespace: dict = {}
    for i, code in enumerate(snippets):
        exec(compile(code, f"README.md snippet {i}", "exec"), namespace)
