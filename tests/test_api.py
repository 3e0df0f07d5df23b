"""Grounder: set_image once, ground many captions; batches; the user's bad input."""
import numpy as np
import pytest
from PIL import Image

from groundkit.api import Grounder, caption_phrases
from groundkit.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def grounder(tiny_ppmn_checkpoint):
    return Grounder.from_pretrained(tiny_ppmn_checkpoint, device="cpu")


def image(h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_ground_returns_one_mask_per_marked_phrase_at_image_size(grounder):
    grounder.set_image(image())
    out = grounder.ground("There is [a red circle] next to [the grass].")
    assert out["caption"] == "There is a red circle next to the grass."
    assert out["phrases"] == ["a red circle", "the grass"]
    assert out["spans"] == [(9, 21), (30, 39)]
    assert out["masks"].shape == (2, 48, 64) and out["masks"].dtype == bool
    assert out["scores"].shape == (2,)


def test_explicit_spans_and_batch_agree_with_set_image(grounder):
    grounder.set_image(image(seed=1))
    one = grounder.ground("a star on the sand", spans=[(0, 6), (10, 18)])
    batch = grounder([image(seed=1), image(40, 40, seed=2)],
                     ["[a star] on [the sand]", "[the sky]"])
    assert len(batch) == 2 and batch[1]["masks"].shape == (1, 40, 40)
    np.testing.assert_array_equal(one["masks"], batch[0]["masks"])
    np.testing.assert_allclose(one["scores"], batch[0]["scores"], atol=1e-5)


def test_return_logits_gives_the_soft_maps_the_masks_threshold(grounder):
    grounder.set_image(image(seed=5))
    hard = grounder.ground("[a red circle] next to [the grass]")
    soft = grounder.ground("[a red circle] next to [the grass]", return_logits=True)
    assert hard["probs"] is None
    probs = soft["probs"]
    assert probs.shape == (2, 48, 64) and probs.dtype == np.float32
    assert 0 <= probs.min() and probs.max() <= 1 and probs.std() > 0
    np.testing.assert_array_equal(probs > grounder.model.cfg.threshold, soft["masks"])
    np.testing.assert_array_equal(hard["masks"], soft["masks"])
    inside = [probs[k][soft["masks"][k]].mean() if soft["masks"][k].any() else 0 for k in range(2)]
    np.testing.assert_allclose(soft["scores"], inside, atol=1e-5)
    batch = grounder([image(seed=5), image(40, 40, seed=2)],
                     ["[a red circle] next to [the grass]", "[the sky]"], return_logits=True)
    assert [r["probs"].shape for r in batch] == [(2, 48, 64), (1, 40, 40)]
    np.testing.assert_allclose(batch[0]["probs"], probs, atol=1e-5)


def test_an_image_grounds_alone_as_in_a_batch_of_other_sizes(grounder):
    # 20 x 64 pads alone to 32 x 64; beside a 48 x 64 image the batch is 64 x 64
    grounder.set_image(image(20, 64, seed=3))
    alone = grounder.ground("[the grass] under [a red circle]")
    batch = grounder([image(48, 64, seed=4), image(20, 64, seed=3)],
                     ["[the sky]", "[the grass] under [a red circle]"])
    np.testing.assert_array_equal(alone["masks"], batch[1]["masks"])
    np.testing.assert_allclose(alone["scores"], batch[1]["scores"], atol=1e-6)


@pytest.mark.parametrize("array", [
    np.zeros((30, 30), np.uint8),                       # grayscale
    np.zeros((30, 30, 4), np.uint8),                    # RGBA
    np.full((30, 30, 3), 60000, np.uint16),             # 16-bit
])
def test_any_image_mode_is_accepted(grounder, array):
    grounder.set_image(array)
    assert grounder.ground("[the grass]")["masks"].shape == (1, 30, 30)


def test_image_files_of_any_mode(grounder, tmp_path):
    Image.fromarray(np.zeros((20, 24), np.uint16)).save(tmp_path / "g16.png")
    grounder.set_image(tmp_path / "g16.png")
    assert grounder.ground("[the sky]")["masks"].shape == (1, 20, 24)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.png"):
        grounder.set_image(tmp_path / "bad.png")
    with pytest.raises(InputError, match="no such image"):
        grounder.set_image(tmp_path / "missing.png")


@pytest.mark.parametrize("caption, spans, message", [
    ("There is [a red circle next to the grass.", None, "never closed"),
    ("a star", [(0, 60)], "outside|beyond|caption"),
    ("", None, "non-empty"),
    ("There is a circle.", [], "no phrase"),
])
def test_bad_captions_are_clear_errors(caption, spans, message):
    with pytest.raises(InputError, match=message):
        caption_phrases(caption, spans)


def test_caption_without_marks_needs_spacy_or_brackets():
    pytest.importorskip("groundkit.text.phrases")
    try:
        import spacy  # noqa: F401
        pytest.skip("spaCy is installed here; the message path is tested in tests/text")
    except ImportError:
        with pytest.raises(InputError, match="bracket|spacy|spaCy"):
            caption_phrases("There is a circle on the grass.")


def test_caption_over_the_encoder_limit_is_a_clear_error(grounder):
    grounder.set_image(image())
    with pytest.raises(InputError, match="limit|max_queries"):
        grounder.ground("[a circle] " + "and a very long caption " * 200)


def test_ground_before_set_image_is_a_clear_error(tiny_ppmn_checkpoint):
    fresh = Grounder.from_pretrained(tiny_ppmn_checkpoint, device="cpu")
    with pytest.raises(InputError, match="set_image"):
        fresh.ground("[a circle]")


def test_checkpoint_of_another_type_is_refused(tmp_path, tiny_ppmn_checkpoint):
    import json
    import shutil
    other = tmp_path / "other"
    shutil.copytree(tiny_ppmn_checkpoint, other)
    meta = json.loads((other / "config.json").read_text())
    meta["model_type"] = "panoptic"
    (other / "config.json").write_text(json.dumps(meta))
    from groundkit.engine.checkpoint import load_checkpoint, save_checkpoint
    state, _ = load_checkpoint(tiny_ppmn_checkpoint)
    save_checkpoint(other, state, meta["config"], "panoptic")
    with pytest.raises(ConfigError, match="not a grounding model"):
        Grounder.from_pretrained(other)


def test_unknown_name_says_how_to_get_a_checkpoint():
    with pytest.raises(ConfigError, match="bundled"):
        Grounder.from_pretrained("no-such-model")


def test_an_empty_batch_is_an_empty_list(grounder):
    assert grounder([], []) == []
    with pytest.raises(InputError, match="0 images but 1 captions"):
        grounder([], ["[a]"])


@pytest.mark.parametrize("device, message", [
    ("banana", "device 'banana': not a device; expected cpu, cuda, cuda:N"),
    ("xla", "device 'xla': not supported"),
])
def test_an_unknown_device_is_a_config_error(tiny_ppmn_checkpoint, device, message):
    with pytest.raises(ConfigError, match=message):
        Grounder.from_pretrained(tiny_ppmn_checkpoint, device=device)
