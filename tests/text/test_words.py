"""Word vectors from the text encoder (the stand-in for GloVe) and their use as VL-NMS's embedding."""
from pathlib import Path

import torch

from groundkit.data.contextual import GAMMA, contextual_objects
from groundkit.data.formats.refcoco import load_referring
from groundkit.text.words import word_embedder, word_embeddings

REFCOCO = Path(__file__).resolve().parents[1] / "fixtures" / "coco_sample" / "refcoco"


def _cos(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def test_a_word_vector_is_the_word_alone(text_encoder):
    words = ["car", "truck", "hexagon", "traffic light", "zebra"]
    vectors = word_embeddings(text_encoder, words)
    assert vectors.shape == (5, text_encoder.dim) and vectors.dtype == torch.float32
    # The same vector whatever else is in the call (padding is masked) ...
    assert torch.allclose(word_embeddings(text_encoder, ["hexagon"])[0], vectors[2], atol=1e-5)
    # ... the mean of the pieces' last hidden states, [CLS] and [SEP] left out.
    out = text_encoder(["hexagon"])
    assert out.features.shape[1] == 5  # [CLS] he ##xa ##gon [SEP]
    assert torch.allclose(out.features[0, 1:4].mean(0), vectors[2], atol=1e-5)
    # On the scale of GloVe: related nouns well above gamma, unrelated ones well below.
    car, truck, zebra = vectors[0], vectors[1], vectors[4]
    assert _cos(car, truck) > GAMMA + 0.05 and _cos(car, zebra) < GAMMA - 0.1


def test_the_embedder_caches_words(text_encoder, monkeypatch):
    embed = word_embedder(text_encoder)
    first = embed(["couch", "sofa", "couch"])
    assert first.shape == (3, text_encoder.dim) and torch.equal(first[0], first[2])
    assert _cos(first[0], first[1]) > 0.7
    calls = []
    monkeypatch.setattr(text_encoder, "forward", lambda words: calls.append(words))
    assert torch.equal(embed(["sofa", "couch"]), first[[1, 0]]) and calls == []
    assert embed([]).shape == (0, text_encoder.dim)


def test_real_refcoco_expression_gets_its_contextual_object(text_encoder):
    samples, instances = load_referring(REFCOCO / "refs(unc).p", REFCOCO / "instances.json", "testB")
    (s,) = samples
    assert s.sentence == "white truck behind the red one"
    names = {c.id: c.name for c in instances.categories.values()}
    image = [a for a in instances.annotations.values() if a.image_id == s.image_id]
    # The other truck (the red one), not the people nor the horses of the image.
    assert contextual_objects(s.sentence, s.ann_id, image, names, word_embedder(text_encoder)) == [60948482]
