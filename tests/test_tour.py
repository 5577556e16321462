"""docs/tour.md is what examples/tour.py prints: the guided tour cannot drift from the code.

The script runs in a fresh process (it chooses the CUDA simulator itself); every
```text block of the page must be one printed step, in order, and every ```python
block must be an excerpt of the script, character for character.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT, PAGE = ROOT / "examples" / "tour.py", ROOT / "docs" / "tour.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)\n```$", PAGE.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def test_the_tour_prints_what_its_page_shows():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_ENABLE_CUDASIM": "1"}
    run = subprocess.run([sys.executable, str(SCRIPT)], check=False, capture_output=True, text=True, env=env,
                         timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    printed = ["== " + s for s in run.stdout.strip().removeprefix("== ").split("\n\n== ")]
    shown = blocks("text")
    assert len(printed) == len(shown) == 8
    for got, page in zip(printed, shown):
        assert got == page, f"examples/tour.py printed\n{got}\nbut docs/tour.md shows\n{page}"


def test_every_code_block_of_the_page_is_in_the_script():
    source = SCRIPT.read_text(encoding="utf-8")
    code = blocks("python")
    assert len(code) >= 9
    for block in code:
        assert block in source, f"docs/tour.md shows code that examples/tour.py does not have:\n{block}"
