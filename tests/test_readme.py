"""The README's code examples run as written."""

import re

from conftest import REPO_ROOT


def test_functional_example_trains():
    readme = (REPO_ROOT / "README.md").read_text()
    code = re.search(r"<!-- functional-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert float(namespace["loss"]) < 2.0  # from ln 10 = 2.303: it learns
