"""Statistics of a generated folder, and the thresholds the synthetic benchmark promises."""
import numpy as np
import pytest

from groundkit.cli import main
from groundkit.data.stats import ROWS, colour_name, find_splits, format_table, has_distractors, split_stats
from groundkit.data.synthetic import generate_benchmark
from groundkit.errors import InputError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    generate_benchmark(out, 0, {"train": 30, "test": 6}, 128, progress=False)
    return out


def test_generated_split_meets_the_promised_shape(root):
    s = split_stats(root, "train")
    assert set(s) == set(ROWS)
    assert s["images"] == s["narratives"] == 30
    assert 3 <= s["noun phrases / narrative"] <= 9
    assert 0.4 <= s["grounded share of noun phrases"] <= 0.7
    assert s["plural share of grounded (>1 segment)"] >= 0.15
    assert s["stuff share of grounded"] >= 0.2
    assert s["thing share of grounded"] + s["stuff share of grounded"] == pytest.approx(1)
    assert 3 <= s["thing instances / image"] <= 10 and 2 <= s["stuff segments / image"] <= 4
    assert s["distractor share of images"] >= 0.6
    assert s["refs / image"] >= 1 and s["sentences / ref"] >= 1


def test_test_split_counts_its_testA_and_testB_refs(root):
    assert split_stats(root, "test")["refs / image"] >= 1


def test_splits_in_usual_order_and_table(root):
    assert find_splits(root) == ["train", "test"]
    table = format_table({"train": split_stats(root, "train")})
    assert "distractor share of images" in table and "%" in table
    with pytest.raises(InputError, match="png_coco"):
        find_splits(root / "images")


def test_distractors_need_both_kinds():
    assert has_distractors([(1, "red"), (1, "blue"), (2, "red")])
    assert not has_distractors([(1, "red"), (1, "blue"), (2, "green")])  # no colour repeats
    assert not has_distractors([(1, "red"), (2, "red"), (3, "red")])  # no shape repeats


def test_colour_name_ignores_the_outline():
    image = np.zeros((8, 8, 3), np.uint8)
    image[1:7, 1:7] = (110, 20, 20)  # dark outline
    image[2:6, 2:6] = (215, 45, 35)  # red fill, fewer pixels than the outline
    mask = np.zeros((8, 8), bool)
    mask[1:7, 1:7] = True
    assert colour_name(image, mask) == "red"


def test_cli_stats(root, capsys):
    assert main(["stats", str(root), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "test" in out and "train" not in out and "refs / image" in out
    assert main(["stats", str(root), "--split", "val"]) == 2
