"""The README's Python snippets run verbatim, in order, where `make demo` leaves the benchmark."""
import re
from pathlib import Path

from groundkit.data.synthetic import generate_benchmark

README = Path(__file__).parents[1] / "README.md"


def test_the_readme_python_snippets_run_verbatim(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2  # grounding + panoptic, referring
    generate_benchmark(tmp_path / "data" / "synthetic", seed=0, sizes={"train": 0, "val": 1, "test": 0},
                       progress=False)  # the demo's val split, first image only
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["out"].box.shape == (4,) and namespace["panoptic"].id_map.ndim == 2
