"""The whole-game example of docs/writing-a-game.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_example_game_runs() -> None:
    text = (ROOT / "docs" / "writing-a-game.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b.startswith(("import", "from"))]
    assert blocks, "no runnable example"
    for code in blocks:
        # A file of its own: numba caches kernels by source file.
        path = ROOT / ".numba_cache" / "doc_example.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(code)
        out = subprocess.run([sys.executable, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "'rule': 'velocity'" in out.stdout
