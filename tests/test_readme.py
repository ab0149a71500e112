"""The README's code examples run as written."""

import re

from conftest import REPO_ROOT


def test_functional_example_trains():
    readme = (REPO_ROOT / "README.md").read_text()
    code = re.search(r"<!-- functional-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert float(namespace["loss"]) < 2.0  # from ln 10 = 2.303: it learns


def test_reliability_section_names_tests_that_exist():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("### Reliability"):readme.index("### Multi-process runs")]
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", section)
    assert len(named) >= 15
    for path, name in named:
        assert f"def {name}(" in (REPO_ROOT / "tests" / path).read_text(), (path, name)
