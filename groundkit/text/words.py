"""Word embeddings from the project's text encoder: the stand-in for GloVe (not available offline).

VL-NMS's pseudo ground truth compares the nouns of an expression with category names by the cosine
of static word vectors (GloVe in the paper). Here a word's vector is the **mean of its word pieces'
last hidden states, the word encoded alone** (``[CLS] word [SEP]``, the special tokens left out of
the mean). Why this and not the input embedding table:

- a word the tokenizer cuts into pieces ("hexagon" -> "he", "##xa", "##gon") gets a vector of the
  whole word, where the mean of the pieces' table rows is a vector of three unrelated fragments;
- the bundled all-MiniLM-L6-v2 is trained so that mean-pooled last hidden states compare by cosine;
- encoded alone, the vector does not depend on a context, as GloVe's does not;
- on the cosine scale it is close to GloVe's (all-MiniLM-L6-v2: unrelated nouns about 0.1, "man" /
  "person" 0.37, "car" / "truck" 0.52, "couch" / "sofa" 0.81), so the paper's gamma = 0.4 keeps its
  meaning. Averaging [CLS] and [SEP] in as well lifts every pair by a shared component (unrelated
  nouns about 0.3), and the table rows give lower cosines (unrelated about 0.08, "car" / "truck"
  0.41).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from groundkit.text.encoder import TextEncoder


def word_embeddings(encoder: TextEncoder, words: Sequence[str]) -> Tensor:
    """``words``: n strings (a word or a short name such as "traffic light") -> ``(n, D) float32``
    on CPU: the mean of each one's word pieces' last hidden states, encoded alone.

    Raises InputError (from the encoder) for an empty list or an empty string.
    """
    with torch.no_grad():
        out = encoder(list(words))
        pieces = (out.offsets[..., 1] > out.offsets[..., 0]).float()  # (n, T): no [CLS]/[SEP]/pad
        total = (out.features * pieces[..., None]).sum(1)
        return (total / pieces.sum(1, keepdim=True).clamp(min=1)).float().cpu()


def word_embedder(encoder: TextEncoder) -> Callable[[list[str]], Tensor]:
    """``embed(words) -> (n, D)``: :func:`word_embeddings` with a per-word cache, to inject where
    the data layer needs word vectors (e.g. :func:`groundkit.data.contextual.contextual_objects`),
    so that it never imports the text layer. A word's vector does not depend on the other words
    of the call (each is encoded alone and padding is masked), up to float rounding."""
    cache: dict[str, Tensor] = {}

    def embed(words: list[str]) -> Tensor:
        missing = list(dict.fromkeys(w for w in words if w not in cache))
        if missing:
            for w, v in zip(missing, word_embeddings(encoder, missing)):
                cache[w] = v
        if not words:
            return torch.zeros(0, encoder.dim)
        return torch.stack([cache[w] for w in words])

    return embed
