import copy

import pytest
import torch

from groundkit.errors import ConfigError, FormatError, InputError
from groundkit.text.encoder import (
    TextEncoder,
    TextFeatureCache,
    leave_out_of_checkpoints,
    span_to_token_indices,
)

CAPTION = "There is a red circle next to the grass."


@pytest.fixture(scope="module")
def encoder(text_encoder):
    return text_encoder  # the session's bundled all-MiniLM-L6-v2 (tests/conftest.py), read offline


def test_bundled_model_dims(encoder):
    assert encoder.dim == 384 and encoder.max_length == 512
    assert encoder.model.config.num_hidden_layers == 6


def test_features_mask_offsets(encoder):
    out = encoder([CAPTION, "a dog"])
    assert out.features.shape == (2, 12, 384)  # [CLS] 10 pieces [SEP]
    assert out.mask.dtype == torch.bool and out.mask.sum(1).tolist() == [12, 4]
    assert out.offsets.dtype == torch.long and out.offsets.shape == (2, 12, 2)
    assert out.offsets[0, 0].tolist() == [0, 0] and out.offsets[0, 11].tolist() == [0, 0]


def test_span_maps_to_word_pieces(encoder):
    offsets = encoder.tokenize([CAPTION])["offsets"][0]
    start = CAPTION.index("a red circle")
    idx = span_to_token_indices(offsets, (start, start + len("a red circle")))
    assert idx == [3, 4, 5]
    ids = encoder.tokenize([CAPTION])["input_ids"][0]
    assert encoder.tokenizer.convert_ids_to_tokens(ids[idx].tolist()) == ["a", "red", "circle"]
    # A span cutting into a word still takes the whole word piece; special tokens never match.
    assert span_to_token_indices(offsets, (0, 2)) == [1]


def test_span_covering_split_word(encoder):
    caption = "a skateboarder jumps"
    tokens = encoder.tokenize([caption])
    idx = span_to_token_indices(tokens["offsets"][0], (2, 14))
    pieces = encoder.tokenizer.convert_ids_to_tokens(tokens["input_ids"][0][idx].tolist())
    assert len(pieces) > 1 and "".join(p.lstrip("#") for p in pieces) == "skateboarder"


def test_bad_span_raises():
    with pytest.raises(InputError):
        span_to_token_indices(torch.zeros(3, 2, dtype=torch.long), (4, 4))


def test_frozen_gives_no_grads(encoder):
    assert encoder.frozen and not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.model.training
    out = encoder([CAPTION])
    assert not out.features.requires_grad
    again = encoder([CAPTION])  # eval mode: dropout off, so the same numbers
    assert torch.equal(out.features, again.features)


def test_long_caption_raises_with_length_and_limit(encoder):
    with pytest.raises(InputError, match=r"caption 1 is 602 word pieces.*limit of 512"):
        encoder.tokenize(["short", "dog " * 600])


@pytest.fixture(scope="module")
def trainable():
    return TextEncoder(freeze=False, max_length=16)


def test_trainable_encoder_gets_gradients_and_lower_limit(trainable):
    assert trainable.max_length == 16 and not trainable.training  # starts in eval mode, as HF loads
    trainable.train()
    assert trainable.model.training
    trainable([CAPTION]).features.sum().backward()
    grads = [p.grad for p in trainable.model.encoder.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    with pytest.raises(InputError, match="limit of 16"):
        trainable([CAPTION + " and a blue square on the left of it"])
    with pytest.raises(ConfigError, match="frozen"):
        TextFeatureCache(trainable)


def test_train_layers_trains_the_top_layers_only():
    top2 = TextEncoder(freeze=False, train_layers=2)
    layers = top2.model.encoder.layer
    trains = {n for n, p in top2.model.named_parameters() if p.requires_grad}
    assert trains == {f"encoder.layer.{i}.{n}" for i in (4, 5) for n, _ in layers[i].named_parameters()}
    top2.train()
    top2([CAPTION]).features.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[4].parameters())
    assert all(p.grad is None for p in layers[3].parameters())
    assert top2.model.embeddings.word_embeddings.weight.grad is None
    for count in (0, 7):
        with pytest.raises(ConfigError, match=r"train_layers must be 1..6"):
            TextEncoder(freeze=False, train_layers=count)


def test_train_layers_finds_the_layers_of_another_family(encoder, tmp_path):
    """DistilBERT keeps its layers at ``transformer.layer`` (BERT: ``encoder.layer``)."""
    from transformers import DistilBertConfig, DistilBertModel
    config = DistilBertConfig(vocab_size=encoder.tokenizer.vocab_size, n_layers=3, dim=32,
                              hidden_dim=64, n_heads=2)
    DistilBertModel(config).save_pretrained(tmp_path)
    encoder.tokenizer.save_pretrained(tmp_path)
    top1 = TextEncoder(tmp_path, freeze=False, train_layers=1)
    trains = {n for n, p in top1.model.named_parameters() if p.requires_grad}
    assert trains == {f"transformer.layer.2.{n}"
                      for n, _ in top1.model.transformer.layer[2].named_parameters()}
    assert top1([CAPTION]).features.shape[-1] == 32


def test_leave_out_of_checkpoints_can_keep_the_trainable_part():
    """keep_trainable: an encoder's fine-tuned parameters are saved and required on load, its
    frozen ones (and buffers) are neither."""
    def owner() -> torch.nn.Module:
        model = torch.nn.Module()
        model.text_encoder = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
        model.text_encoder[1].requires_grad_(False)
        model.head = torch.nn.Linear(2, 1)
        leave_out_of_checkpoints(model, "text_encoder", keep_trainable=True)
        return model
    saved = owner()
    state = saved.state_dict()
    assert set(state) == {"text_encoder.0.weight", "text_encoder.0.bias", "head.weight", "head.bias"}
    loaded = owner()
    loaded.load_state_dict(state)
    assert torch.equal(loaded.text_encoder[0].weight, saved.text_encoder[0].weight)
    del state["text_encoder.0.bias"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*text_encoder.0.bias"):
        owner().load_state_dict(state)


def test_bad_captions_raise(encoder):
    with pytest.raises(InputError, match="list of strings"):
        encoder(CAPTION)
    with pytest.raises(InputError, match="caption 1"):
        encoder([CAPTION, ""])
    with pytest.raises(InputError, match="empty"):
        encoder([])


def test_missing_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="never downloads"):
        TextEncoder(tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="never downloads"):
        TextEncoder("some-org/model-not-in-the-local-cache")
    with pytest.raises(ConfigError, match="max_length"):
        TextEncoder(max_length=100_000)


def test_cache_computes_each_caption_once(encoder, monkeypatch):
    cache = TextFeatureCache(encoder, dtype=torch.float32, batch_size=2)
    calls = []
    real_forward = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda caps: calls.append(list(caps)) or real_forward(caps))
    captions = [CAPTION, "a dog", "two cats on a sofa", "a dog"]
    first = cache.get_or_compute(captions)
    assert sorted(c for batch in calls for c in batch) == sorted(set(captions))
    second = cache.get_or_compute(list(reversed(captions)))
    assert len(calls) == 2  # nothing recomputed
    assert torch.equal(second.features[0], first.features[3])
    direct = real_forward(captions)
    assert torch.allclose(first.features, direct.features * direct.mask[..., None], atol=1e-5)
    assert torch.equal(first.mask, direct.mask) and torch.equal(first.offsets, direct.offsets)


def test_cache_save_load_round_trip(encoder, tmp_path):
    cache = TextFeatureCache(encoder)  # float16 storage
    before = cache.get_or_compute([CAPTION, "a dog"])
    cache.save(tmp_path / "text.safetensors")
    loaded = TextFeatureCache.load(tmp_path / "text.safetensors")
    assert len(loaded) == 2 and CAPTION in loaded and loaded.dtype == torch.float16
    after = loaded.get_or_compute([CAPTION, "a dog"])
    assert torch.equal(before.features, after.features) and torch.equal(before.offsets, after.offsets)
    with pytest.raises(InputError, match="no encoder"):
        loaded.get_or_compute(["an unseen caption"])


def test_cache_rejects_bad_files(tmp_path):
    (tmp_path / "bad.safetensors").write_text("nope")
    with pytest.raises(FormatError, match="bad.safetensors"):
        TextFeatureCache.load(tmp_path / "bad.safetensors")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(FormatError, match="format"):
        TextFeatureCache.load(tmp_path / "other.safetensors")


def test_half_precision_folder_gives_float32_features(encoder, tmp_path):
    """A folder saved in fp16 (e.g. to halve its size) encodes in float32, within fp16 rounding of
    the float32 original."""
    copy.deepcopy(encoder.model).half().save_pretrained(tmp_path)  # the session's model untouched
    encoder.tokenizer.save_pretrained(tmp_path)
    half = TextEncoder(tmp_path)
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    expected, got = encoder([CAPTION]).features, half([CAPTION]).features
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=2e-2) and not torch.equal(got, expected)


def test_adapters_leave_the_features_unchanged_until_trained_and_train_alone():
    """adapter_rank: LoRA adapters on every linear layer below the top ``train_layers`` (all
    six with none); the installed weights there get no gradient."""
    plain = TextEncoder(freeze=False, train_layers=2)
    adapted = TextEncoder(freeze=False, train_layers=2, adapter_rank=4, adapter_alpha=8.0)
    assert torch.equal(adapted([CAPTION]).features, plain([CAPTION]).features)
    assert {key.split("-")[0] for key in adapted.adapters} == {"0", "1", "2", "3"}
    assert len(adapted.adapters) == 4 * 6   # query, key, value, attention output, FFN in and out
    adapted.train()
    adapted([CAPTION]).features.sum().backward()
    layers = adapted.model.encoder.layer
    assert all(p.grad is None for p in layers[3].parameters())
    assert all(p.grad is not None for p in layers[4].parameters())
    assert all(a.up.weight.grad is not None for a in adapted.adapters.values())
    everywhere = TextEncoder(freeze=False, train_layers=0, adapter_rank=2)
    assert {key.split("-")[0] for key in everywhere.adapters} == {str(i) for i in range(6)}
    assert not any(p.requires_grad for p in everywhere.model.parameters())
    with pytest.raises(ConfigError, match="adapter_rank needs an encoder that is not frozen"):
        TextEncoder(freeze=True, adapter_rank=2)
    for rank, alpha in ((-1, 1.0), (2, 0.0)):
        with pytest.raises(ConfigError, match="adapter rank must be >= 0 and alpha > 0"):
            TextEncoder(freeze=False, train_layers=2, adapter_rank=rank, adapter_alpha=alpha)
