"""The one-stage panoptic narrative grounding model shared by PPMN and DRMN.

Both methods take the same inputs and losses and differ only in their head: a
:class:`GroundingModel` owns the backbone, neck, frozen text encoder and the loss; a
:class:`GroundingHead` turns visual features and word-piece queries into one logit map per query
and round.

Batch contract (built by ``groundkit.data.grounding.collate_grounding``):
    images:  (B, 3, H, W) float, normalised, H and W multiples of 32
    captions: list of B str
    spans:   list of B lists of (start, end) character spans of the phrases to ground
    image_sizes: B ``(h, w)``: the image inside the padding (prediction)
    orig_sizes:  B ``(H0, W0)``: the size masks are returned at (prediction)
    masks:   list of B tensors (P_i, H/4, W/4) float in [0, 1] (training only)
    semantic: (B, H/4, W/4) int64 category labels, 255 ignored (training with semantic_classes > 0)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from groundkit.data.transforms import map_padded_groups, padding_mask
from groundkit.errors import InputError
from groundkit.models.losses import bce_dice_loss
from groundkit.models.mask_refine import check_refinement, refine_on_image
from groundkit.models.panoptic.semantic_head import semantic_loss
from groundkit.structures import GroundingResult
from groundkit.text.encoder import (
    TextEncoder,
    TextFeatureCache,
    leave_out_of_checkpoints,
    span_to_token_indices,
    text_encoder_param_groups,
)
from groundkit.vision.backbone import BackboneConfig, build_backbone
from groundkit.vision.neck import SemanticFPNNeck


@dataclass
class GroundingModelConfig:
    """What every one-stage grounding model shares; defaults follow the papers."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    text_encoder: str | None = None   # a local Hugging Face folder; None = bundled all-MiniLM-L6-v2
    freeze_text: bool = True
    text_adapter_layers: int = 0      # trainable transformer layers over frozen text (0 = paper)
    neck_channels: int = 256
    neck_stride: int = 8              # stride of the matching grid: 8 as the papers; 4 for small images
    hidden_dim: int = 256
    # "phrase": one query per phrase, its word pieces mean-pooled (the papers' R, N x C);
    # "word_piece": one query per word piece, each trained with its phrase's mask and the maps
    # averaged per phrase at inference (the official PPMN code).
    query: Literal["phrase", "word_piece"] = "phrase"
    max_queries: int = 64             # queries (phrases or word pieces) per caption
    # The papers' caption limits (PPMN Sec. 4.2, DRMN Sec. IV-B): at most 30 phrases to ground and
    # 230 word pieces (with [CLS] and [SEP]) per caption. Past them a caption is an InputError
    # that names the key, never truncated (a phrase cut off would lose its word pieces, or take
    # another's); None lifts a limit (the text encoder's own, 512 for BERT, still holds).
    max_phrases: int | None = 30
    max_word_pieces: int | None = 230
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    dice_eps: float = 2e-3
    threshold: float = 0.5
    # Edge-aware refinement of the masks on the picture (models.mask_refine: the guided filter):
    # window radius in input pixels (0 = off, the papers) and ridge. (DRMN's refine_rounds are
    # its paper's rounds, another thing.)
    refine_radius: int = 0
    refine_eps: float = 1e-4
    # A semantic-segmentation auxiliary loss (cross-entropy over the panoptic categories on the
    # stride-4 grid) standing in for the papers' panoptic pre-training when training from random
    # weights: the number of categories of the data (0 = off, the papers) and its weight.
    semantic_classes: int = 0
    semantic_weight: float = 1.0

    def __post_init__(self) -> None:
        check_refinement("grounding", self.refine_radius, self.refine_eps)


class GroundingHead(nn.Module):
    """A method's head: ``forward(features, queries, valid) -> list of (B, Q, h, w) logits``, one
    per round.

    ``features`` holds ``"p2".."p5"`` (FPN levels) and, when ``uses_neck``, ``"neck"`` (stride 8);
    ``queries`` is ``(B, Q, C)``, ``valid`` ``(B, Q)`` bool, False on the padding queries of an
    image with fewer queries than the batch's longest (a head whose queries change shared state,
    as DRMN's pixel update, must leave them out). The last round's logits are the prediction;
    rounds from ``first_supervised_round`` on are supervised.
    """

    uses_neck: bool = True  # a head that never reads features["neck"] sets False: no neck is built
    first_supervised_round: int = 0  # 1 leaves the initial matching (round 0) out of the loss


@dataclass
class Queries:
    """Word-piece queries of a batch.

    features: ``(B, Q, C)``; phrase: ``(B, Q)`` long, index of the query's phrase in its caption, -1
    for padding; valid: ``(B, Q)`` bool.
    """

    features: torch.Tensor
    phrase: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        return self.phrase >= 0


class GroundingModel(nn.Module):
    """Backbone + neck + text encoder + a method head, trained with BCE + Dice on every round.

    The parts are passed in (see :func:`build_grounding`), so a model can share a frozen backbone
    or a text encoder that another model owns; the model adds only its own small layers (text
    projection, optional text adapter and semantic classifier).
    """

    def __init__(self, cfg: GroundingModelConfig, head: GroundingHead, backbone: nn.Module,
                 neck: nn.Module | None, text_encoder: TextEncoder) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.neck = neck
        self.text_encoder = text_encoder
        self.text_cache = TextFeatureCache(self.text_encoder) if cfg.freeze_text else None
        text_dim = self.text_encoder.dim
        self.text_adapter = (nn.TransformerEncoder(
            nn.TransformerEncoderLayer(text_dim, max(1, text_dim // 64), 4 * text_dim,
                                       dropout=0.0, batch_first=True),
            cfg.text_adapter_layers) if cfg.text_adapter_layers > 0 else None)
        self.text_proj = nn.Linear(text_dim, cfg.hidden_dim)               # W2 of PPMN Eq. (1)
        self.head = head
        # Reads the neck, or the stride-4 FPN level P2 of a head without one (DRMN).
        self.semantic_head = (nn.Conv2d(cfg.neck_channels if self.neck is not None
                                        else cfg.backbone.fpn_channels, cfg.semantic_classes, 1)
                              if cfg.semantic_classes > 0 else None)
        # Which round's maps are the prediction: the last (-1), as the papers; an earlier round
        # scores what the refinement rounds add (benchmarks/analyze_grounding.py).
        self.predict_round = -1
        if self.text_encoder.frozen:
            # A frozen encoder is the installed one: checkpoints leave it out and stay small.
            leave_out_of_checkpoints(self, "text_encoder")

    # --- encoders -----------------------------------------------------------------------------

    def encode_images(self, images: torch.Tensor,
                      image_sizes: list[tuple[int, int]] | None = None) -> dict[str, torch.Tensor]:
        """images: ``(B, 3, H, W)`` -> ``{"p2".."p5", "neck": (B, C, H/8, W/8)}``; with the valid
        ``image_sizes`` of a padded batch also ``"padding"``: ``(B, H/4, W/4)`` bool, True on
        padding (for heads that attend across the image, DRMN's)."""
        features = dict(self.backbone(images))
        if self.neck is not None:
            features["neck"] = self.neck(features)
        if image_sizes is not None:
            features["padding"] = padding_mask(image_sizes, tuple(features["p2"].shape[-2:]), 4,
                                               images.device)
        return features

    def encode_text(self, captions: list[str], spans: list[list[tuple[int, int]]]) -> Queries:
        """Word-piece queries of the phrases of each caption (padded to the batch's longest)."""
        text = (self.text_cache.get_or_compute(captions) if self.text_cache is not None
                else self.text_encoder(captions))
        self._check_lengths(captions, text.mask)
        device = self.text_proj.weight.device
        features, mask = text.features.to(device), text.mask.to(device)
        if self.text_adapter is not None:
            features = self.text_adapter(features, src_key_padding_mask=~mask)
        token_lists = [self._phrase_tokens(c, s, o) for c, s, o in zip(captions, spans, text.offsets)]
        q = max([len(t) for t in token_lists] + [1])
        index = torch.zeros(len(captions), q, dtype=torch.long, device=device)
        phrase = torch.full((len(captions), q), -1, dtype=torch.long, device=device)
        for b, tokens in enumerate(token_lists):
            if tokens:
                index[b, :len(tokens)] = torch.tensor([t for t, _ in tokens], device=device)
                phrase[b, :len(tokens)] = torch.tensor([p for _, p in tokens], device=device)
        gathered = torch.gather(features, 1, index[..., None].expand(-1, -1, features.shape[-1]))
        if self.cfg.query == "phrase":
            gathered, phrase = pool_phrases(gathered, phrase, [len(s) for s in spans])
        return Queries(self.text_proj(gathered), phrase)

    def _check_lengths(self, captions: list[str], mask: torch.Tensor) -> None:
        """InputError for a caption of more than ``max_word_pieces`` word pieces."""
        limit = self.cfg.max_word_pieces
        if limit is None:
            return
        for caption, n in zip(captions, mask.sum(1).tolist()):
            if n > limit:
                raise InputError(f"this caption is {n} word pieces long (with [CLS] and [SEP]); the "
                                 f"model takes at most {limit} (max_word_pieces, the papers' 230): "
                                 f"shorten or split it, or raise model.max_word_pieces "
                                 f"({caption[:60]!r}...)")

    def _phrase_tokens(self, caption: str, spans: list[tuple[int, int]], offsets: torch.Tensor
                       ) -> list[tuple[int, int]]:
        """``(token index, phrase index)`` of every word piece of every phrase, in order."""
        if self.cfg.max_phrases is not None and len(spans) > self.cfg.max_phrases:
            raise InputError(f"this caption has {len(spans)} phrases to ground; the model takes at "
                             f"most {self.cfg.max_phrases} (max_phrases, the papers' 30): ground "
                             f"fewer phrases per call, or raise model.max_phrases "
                             f"({caption[:60]!r}...)")
        tokens = []
        for p, span in enumerate(spans):
            indices = span_to_token_indices(offsets, span)
            if not indices:
                raise InputError(f"phrase {caption[span[0]:span[1]]!r} at characters {span} of the "
                                 f"caption has no word piece within the text encoder's limit")
            tokens += [(i, p) for i in indices]
        count = len(spans) if self.cfg.query == "phrase" else len(tokens)
        if count > self.cfg.max_queries:
            unit = "phrases" if self.cfg.query == "phrase" else "word pieces of phrases"
            raise InputError(f"this caption has {count} {unit}; the model takes at most "
                             f"{self.cfg.max_queries} (max_queries): ground fewer phrases per call")
        return tokens

    # --- training and inference ---------------------------------------------------------------

    def forward(self, batch: dict) -> dict[str, torch.Tensor] | list[GroundingResult]:
        """Training: a dict of losses with ``"loss"``. Eval: :meth:`predict` of the batch."""
        if not self.training:
            return self.predict(batch)
        features = self.encode_images(batch["images"], batch.get("image_sizes"))
        queries = self.encode_text(batch["captions"], batch["spans"])
        losses = self.loss(self.round_logits(features, queries), queries, batch["masks"])
        if self.semantic_head is not None:
            if "semantic" not in batch:
                raise InputError("model.semantic_classes > 0 trains with category labels: the "
                                 "batch has no 'semantic' (GroundingDataset(..., semantic=True))")
            losses["semantic"] = self.cfg.semantic_weight * self.semantic_aux_loss(features,
                                                                                batch["semantic"])
            losses["loss"] = losses["loss"] + losses["semantic"]
        return losses

    def semantic_aux_loss(self, features: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the auxiliary category map, as the panoptic model's semantic loss.

        labels: ``(B, H/4, W/4)`` int64, 255 ignored (sampled to the neck's grid when coarser).
        """
        logits = self.semantic_head(features["neck"] if self.neck is not None else features["p2"])
        return semantic_loss(logits, labels)

    def round_logits(self, features: dict[str, torch.Tensor], queries: Queries) -> list[torch.Tensor]:
        """The head's logits of every round at stride 4: L+1 x ``(B, Q, H/4, W/4)``."""
        rounds = self.head(features, queries.features, queries.valid)
        size = features["p2"].shape[-2:]  # the stride-4 grid
        return [logits if logits.shape[-2:] == size else
                F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
                for logits in rounds]

    def phrase_maps(self, features: dict[str, torch.Tensor], captions: list[str],
                    spans: list[list[tuple[int, int]]]) -> list[torch.Tensor]:
        """Probabilities of round ``predict_round`` (the last by default) averaged over each phrase's
        word pieces: B x ``(P_i, H/4, W/4)``.

        ``features`` may be computed once per image (``encode_images``) and reused for many captions.
        """
        queries = self.encode_text(captions, spans)
        probs = self.round_logits(features, queries)[self.predict_round].sigmoid()
        return phrase_probabilities(probs, queries.phrase, [len(s) for s in spans])

    @torch.no_grad()
    def predict(self, batch: dict, return_probs: bool = False) -> list[GroundingResult]:
        """One :class:`GroundingResult` per image of a padded batch, masks at ``orig_sizes``.

        Reads ``images``, ``captions``, ``spans``, ``image_sizes`` (each image inside the
        padding; default: all of it) and ``orig_sizes`` (default: ``image_sizes``). Images run
        in groups of the same padded size (:func:`map_padded_groups`), so an image's result does
        not depend on the rest of the batch. ``return_probs``: results also carry the phrase
        probability maps they were thresholded from (``probs (N, H, W) float32``).
        """
        return map_padded_groups(batch, partial(self._predict_group, return_probs=return_probs))

    def _predict_group(self, batch: dict, return_probs: bool = False) -> list[GroundingResult]:
        probs = self.predict_maps(batch)
        sizes = batch.get("image_sizes") or [tuple(batch["images"].shape[-2:])] * len(probs)
        return self.postprocess(probs, batch["captions"], batch["spans"], sizes,
                                batch.get("orig_sizes") or sizes, return_probs, batch["images"])

    def predict_maps(self, batch: dict) -> list[torch.Tensor]:
        """The phrase probabilities of a batch before post-processing: B x ``(P_i, Hp/4, Wp/4)``."""
        features = self.encode_images(batch["images"], batch.get("image_sizes"))
        return self.phrase_maps(features, batch["captions"], batch["spans"])

    def postprocess(self, probs: list[torch.Tensor], captions: list[str],
                    spans: list[list[tuple[int, int]]], image_sizes: list[tuple[int, int]],
                    orig_sizes: list[tuple[int, int]], return_probs: bool = False,
                    images: torch.Tensor | None = None) -> list[GroundingResult]:
        """B x ``(P_i, Hp/4, Wp/4)`` phrase probabilities -> one :class:`GroundingResult` each
        (with ``return_probs``, also the maps at ``orig_sizes`` its masks threshold). ``images
        (B, 3, Hp, Wp)``, the model's inputs: the guides of ``cfg.refine_radius`` (needed then)."""
        if self.cfg.refine_radius and images is None:
            raise ValueError("postprocess: refine_radius needs the input images")
        results = []
        for b, (p, caption, found, size, orig) in enumerate(zip(probs, captions, spans,
                                                               image_sizes, orig_sizes)):
            full = phrase_probs_at_size(p.cpu(), size, orig)
            if self.cfg.refine_radius:
                full = refine_on_image(full, images[b].cpu(), size, self.cfg.refine_radius,
                                       self.cfg.refine_eps)
            masks, scores = threshold_phrase_probs(full, self.cfg.threshold)
            found = [tuple(s) for s in found]
            results.append(GroundingResult(caption, [caption[a:b] for a, b in found], found,
                                           masks.numpy(), scores.numpy(),
                                           full.numpy() if return_probs else None))
        return results

    def loss(self, rounds: list[torch.Tensor], queries: Queries, masks: list[torch.Tensor]
             ) -> dict[str, torch.Tensor]:
        """BCE + Dice on every round from the head's ``first_supervised_round``; each word piece
        is supervised with its phrase's mask."""
        valid = queries.valid
        targets = torch.stack([masks[b][queries.phrase[b].clamp(min=0)]
                               for b in range(len(masks))])                # (B, Q, h, w)
        losses: dict[str, torch.Tensor] = {}
        first = self.head.first_supervised_round
        for r, logits in enumerate(rounds[first:], start=first):
            for name, value in bce_dice_loss(logits[valid], targets[valid], self.cfg.bce_weight,
                                             self.cfg.dice_weight, self.cfg.dice_eps).items():
                losses[f"{name}_{r}"] = value
        losses["loss"] = sum(losses.values())
        return losses

    def param_groups(self, lr: float, text_lr: float | None = None) -> list[dict]:
        """Trainable parameters; the text encoder (when not frozen) gets ``text_lr``."""
        return text_encoder_param_groups(self, self.text_encoder, lr, text_lr)


def pool_phrases(features: torch.Tensor, phrase: torch.Tensor, num_phrases: list[int]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each phrase's word-piece features.

    features: ``(B, Q, D)``; phrase: ``(B, Q)`` (-1 = padding) -> ``(B, P, D)`` and the phrase
    index of each pooled query ``(B, P)`` (-1 where an image has fewer than P phrases).
    """
    p = max(num_phrases + [1])
    one_hot = F.one_hot(phrase.clamp(min=0), p).to(features.dtype) * (phrase >= 0)[..., None]
    pooled = torch.einsum("bqp,bqd->bpd", one_hot, features) / one_hot.sum(1).clamp(min=1)[..., None]
    index = torch.arange(p, device=phrase.device).expand(len(num_phrases), p)
    valid = index < torch.tensor(num_phrases, device=phrase.device)[:, None]
    return pooled, torch.where(valid, index, torch.full_like(index, -1))


def phrase_probabilities(probs: torch.Tensor, phrase: torch.Tensor, num_phrases: list[int]
                         ) -> list[torch.Tensor]:
    """Average the maps of each phrase's word pieces.

    probs: ``(B, Q, h, w)``; phrase: ``(B, Q)`` (-1 = padding) -> B x ``(P_i, h, w)``.
    """
    out = []
    for b, n in enumerate(num_phrases):
        one_hot = F.one_hot(phrase[b].clamp(min=0), max(n, 1)).to(probs.dtype)
        one_hot = one_hot * (phrase[b] >= 0)[:, None].to(probs.dtype)      # (Q, P)
        total = torch.einsum("qp,qhw->phw", one_hot, probs[b])
        out.append((total / one_hot.sum(0).clamp(min=1)[:, None, None])[:n])
    return out


def postprocess_grounding(probs: torch.Tensor, input_size: tuple[int, int],
                          orig_size: tuple[int, int], threshold: float = 0.5
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Phrase probability maps of the padded batch -> masks at the original image size.

    probs: ``(P, Hp/4, Wp/4)`` for an image resized to ``input_size`` (then padded) ->
    masks ``(P, H, W) bool`` and scores ``(P,)`` = mean probability inside the mask (0 when empty).
    """
    return threshold_phrase_probs(phrase_probs_at_size(probs, input_size, orig_size), threshold)


def phrase_probs_at_size(probs: torch.Tensor, input_size: tuple[int, int],
                         orig_size: tuple[int, int]) -> torch.Tensor:
    """``(P, Hp/4, Wp/4)`` phrase probabilities of an image resized to ``input_size`` (then
    padded) -> ``(P, H, W) float32`` at ``orig_size``: the padding cropped, bilinear resizing."""
    h4, w4 = -(-input_size[0] // 4), -(-input_size[1] // 4)
    probs = probs[:, :h4, :w4]
    if probs.shape[0] == 0:
        return torch.zeros((0, *orig_size))
    return F.interpolate(probs[None].float(), size=tuple(orig_size), mode="bilinear",
                         align_corners=False)[0]


def threshold_phrase_probs(full: torch.Tensor, threshold: float = 0.5
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, H, W)`` probabilities -> masks ``full > threshold`` and scores ``(P,)``, the mean
    probability inside each mask (0 when empty)."""
    masks = full > threshold
    area = masks.flatten(1).sum(1)
    scores = (full * masks).flatten(1).sum(1) / area.clamp(min=1)
    return masks, scores


def build_grounding(cfg: GroundingModelConfig, head: GroundingHead, *,
                    backbone: nn.Module | None = None,
                    text_encoder: TextEncoder | None = None) -> GroundingModel:
    """Compose a grounding model around ``head``; ``backbone`` and ``text_encoder`` may be parts
    another model owns (built from ``cfg`` when not given)."""
    backbone = backbone if backbone is not None else build_backbone(cfg.backbone)
    # An unused neck would cost compute and leave DDP with parameters that get no gradient.
    neck = (SemanticFPNNeck(cfg.backbone.fpn_channels, cfg.neck_channels, stride=cfg.neck_stride)
            if head.uses_neck else None)
    text_encoder = text_encoder or TextEncoder(cfg.text_encoder, freeze=cfg.freeze_text)
    return GroundingModel(cfg, head, backbone, neck, text_encoder)
