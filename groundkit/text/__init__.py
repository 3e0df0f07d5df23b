"""Text side: a local Hugging Face encoder with character offsets, a feature cache, phrase spans,
word vectors.

transformers is imported only when a TextEncoder is built.
"""
from groundkit.text.encoder import (
    TextEncoder,
    TextFeatureCache,
    TextFeatures,
    default_model_path,
    span_to_token_indices,
)
from groundkit.text.phrases import check_spans, noun_chunk_spans, parse_marked_caption, parse_spans
from groundkit.text.words import word_embedder, word_embeddings

__all__ = [
    "TextEncoder", "TextFeatureCache", "TextFeatures", "default_model_path",
    "span_to_token_indices", "check_spans", "noun_chunk_spans", "parse_marked_caption",
    "parse_spans",
    "word_embedder", "word_embeddings",
]
