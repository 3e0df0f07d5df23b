"""DRMN: Deformable-attention Refined Matching Network.

Lin et al., "Context Does Matter: End-to-end Panoptic Narrative Grounding with Deformable Attention
Refined Matching Network", ICDM 2023. Same inputs, queries and losses as PPMN
(:mod:`groundkit.models.ppmn`); the head differs. Read against the paper's Algorithm 1:

1. Deformable encoder (lines 3-12, Sec. III-A/B): P2..P5 are projected to ``hidden_dim``, given a
   sine positional code plus a learned level embedding, flattened and encoded by ``encoder_layers``
   Deformable DETR layers in which every pixel of every level is a query at its own centre.
   ``encoder_levels=3`` encodes P3..P5 only (P2 stays projected; see below).
2. Matching (lines 13-15, Eq. 10-12): the encoded levels are resized to the matching grid (P3's,
   stride 8, as the paper; P2's with ``neck_stride=4``) and averaged into one pixel map F^;
   round 0 is the dot product of the projected queries with it (:meth:`DRMNHead.forward`).
3. Refinement, ``refine_rounds`` times (lines 17-26, :class:`RefinementRound`):
   - line 18: every query takes the top-k pixels of its current map (``top_pixel_indices``);
   - line 21: adds its own feature to theirs (and, with ``pixel_pos``, their positional code,
     as the paper; by default the code only steers the sampling, see below);
   - line 22: re-encodes them with deformable attention (queries = those pixels plus their
     positional code, reference points = their centres) over the first-stage encoded levels;
   - lines 21-22, Eq. 26 (``pixel_update``, the synthetic config's setting): the re-encoded pixels
     **replace their old features in the pixel map** F^ (:func:`scatter_mean_pixels`), so the
     next matching and the next round's top-k use "the latest representation" (Eq. 13);
   - line 23, Eq. 14-16: updates the query by cross-attention over its re-encoded pixels
     (+ dropout, residual, LayerNorm, FFN);
   - line 25, Eq. 13: matches every query again with the (updated) pixel map.
   The loss covers every round (round 0 too, as PPMN and the paper's Sec. III-E text) or, with
   ``loss_rounds="refined"``, the refinement rounds only (the sum of Eq. 17 runs over i = 1..I).

Choices the paper leaves open, and why:

- The semantic-FPN neck of the shared model is not part of DRMN: Eq. (11) builds the pixel map from
  the encoder alone (``neck_fusion="none"``, default). ``neck_fusion="add"`` adds the neck map,
  projected to ``hidden_dim``, to the averaged encoder map (a PPMN/DRMN hybrid, cheap to try).
- Alg. 1 writes the re-encoded pixels back one phrase after the other (the loop of lines 19-24),
  so a later phrase re-encodes pixels an earlier one already rewrote and the result depends on the
  phrase order. Here the update is order-free: every phrase of the round re-encodes the pixels as
  they were at the round's start, and all updates are applied at once; a pixel picked by several
  phrases gets the mean of their re-encodings (Eq. 23 is the same "batch" reading of Eq. 24-25).
  Padding queries (images with fewer phrases than the batch's longest) write nothing, so an
  image's output still does not depend on its batch.
- ``pixel_update`` defaults to False in :class:`DRMNConfig` (and so for every checkpoint saved
  before the key existed, the bundled ``drmn-synthetic`` among them: their configs lack the key and
  keep the behaviour they were trained with, each round matching the first-stage pixel map as
  PPMN's LCPA does); ``configs/drmn_synthetic.yaml`` sets it True, the paper's.
- ``pixel_pos`` (default False, the behaviour the bundled checkpoint was trained with) adds the
  positional code to the selected pixel features before re-encoding them, as Alg. 1 line 21 does
  (it then stays in the re-encoded features, through the layer's residual); without it the code
  enters the deformable attention's query only (sampling offsets and weights), as in Deformable
  DETR's encoder, and the features carry none.
- Padding of images of different sizes: a batch padded to its largest image carries each image's
  valid size (``image_sizes``), from which ``encode_images`` makes a stride-4 padding mask; the
  head reads it on every level and masks the padding as Deformable DETR does: the encoder never
  samples it and normalises reference points by each image's valid part, the sine codes count
  valid pixels only, and a refinement round neither picks a padding pixel into its top-k nor
  samples one. (GroupNorm statistics in the backbone and ``input_proj`` still include the
  padding, as in Deformable DETR.) A batch without padding runs exactly as before.
- Eq. (15-16) are implemented as written: ``g = dropout(attn + q)``, ``q = ffn(norm(q + g))``. The
  query ends in the FFN's linear layer, as round 0's ends in the projection V^g, so every round's
  logits start at the same scale. (A post-norm DETR block instead, LayerNorm last, starts the
  refined rounds with logits ~5x larger than round 0's and trained worse in a 40-step check.)
- Each round has its own weights (as PPMN's rounds and DETR's decoder layers).
- The matching grid's stride is the shared ``neck_stride`` (8, the paper's, or 4) rather than a
  DRMN-only field: it is the same idea in both methods (the grid every query is matched on and
  top-k pixels are drawn from), one key sets it in both synthetic configs, and with
  ``neck_fusion="add"`` the neck map is on that grid by construction. At stride 4 (small images:
  a stride-8 grid caps thing IoU at 0.66 on the synthetic benchmark, stride 4 at 0.89) the levels
  are averaged on P2's grid, the top-k pixels are P2-grid pixels and their reference points are
  P2-grid centres; the encoder and the deformable memory are the same pyramid either way.
- ``encoder_levels`` (default 4, P2..P5 as the paper) trades context for speed on small images:
  P2 holds 3/4 of the pyramid's pixels, so encoding P3..P5 only (as Deformable DETR, whose finest
  level is stride 8) cuts the encoder's queries 4x and its samples per query by 1/4. P2, projected
  but not encoded, still enters the average of step 2, so the stride-4 grid keeps its detail (the
  FPN's top-down path already gave P2 the coarse context); the refinement samples the encoded
  P3..P5. On the synthetic config (128 px, batch 16, one thread) a training step takes ~400 ms
  instead of ~990 ms (PPMN's: ~250 ms).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from groundkit.errors import ConfigError
from groundkit.models.grounding import GroundingHead, GroundingModel, GroundingModelConfig, build_grounding
from groundkit.models.ppmn import gather_pixels, matching_logits, top_pixel_indices
from groundkit.vision.deformable_encoder import (
    DeformableEncoder,
    DeformableEncoderLayer,
    FlatLevels,
    flatten_levels,
)
from groundkit.vision.position import PositionEmbeddingSine
from groundkit.vision.resnet import num_groups

LEVELS = ("p2", "p3", "p4", "p5")
GRID_LEVEL = {4: 0, 8: 1}  # matching grid stride -> the level whose grid it is (P2, P3)


@dataclass
class DRMNConfig(GroundingModelConfig):
    """DRMN hyper-parameters; defaults are the paper's (Tables III-V) or Deformable DETR's."""

    encoder_layers: int = 2     # T; Table III: 0 -> 2 gives +1.4 AR, 3 is worse
    refine_rounds: int = 2      # I; Table IV: 0 -> 1 gives +3.1 AR, 2 ties 1 overall, best on stuff
    top_k: int = 100            # k pixels per query and round; Table V: 10..400 within 0.2 AR
    heads: int = 8              # deformable and cross-attention heads
    points: int = 4             # sampling points per head and level
    ffn_dim: int = 1024         # Deformable DETR's encoder FFN width
    dropout: float = 0.1        # Deformable DETR's
    encoder_levels: int = 4     # the coarsest levels encoded: 4 = P2..P5 (paper), 3 = P3..P5
    neck_fusion: Literal["none", "add"] = "none"
    # neck_stride (inherited) is the matching grid's stride: 8 (the paper's, P3) or 4 (P2).
    # Write each round's re-encoded top-k pixels back into the pixel map (Alg. 1 lines 21-22, 25;
    # Eq. 13, 26): True is the paper's. False (every round matches the first-stage map) is the
    # default only so that checkpoints saved before this key keep their behaviour; the synthetic
    # config sets True.
    pixel_update: bool = False
    pixel_pos: bool = False     # add the positional code to the selected pixels (Alg. 1 line 21)
    # "all": every round is supervised (round 0 too, as PPMN); "refined": rounds 1..I (Eq. 17).
    loss_rounds: Literal["all", "refined"] = "all"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("encoder_layers", "refine_rounds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"DRMN: model.{name} must be >= 0, got {getattr(self, name)}")
        if not 1 <= self.encoder_levels <= len(LEVELS):
            raise ConfigError(f"DRMN: model.encoder_levels must be 1..{len(LEVELS)}, "
                              f"got {self.encoder_levels}")
        if self.top_k < 1 or self.points < 1 or self.heads < 1:
            raise ConfigError(f"DRMN: model.top_k, model.points and model.heads must be >= 1, got "
                              f"{self.top_k}, {self.points} and {self.heads}")
        if self.neck_stride not in GRID_LEVEL:
            raise ConfigError(f"DRMN: model.neck_stride (the matching grid's stride) must be 4 or 8, "
                              f"got {self.neck_stride}")
        if self.loss_rounds == "refined" and self.refine_rounds == 0:
            raise ConfigError("DRMN: model.loss_rounds='refined' supervises the refinement rounds "
                              "only, and model.refine_rounds is 0: nothing would be trained")
        if self.hidden_dim % self.heads or self.hidden_dim % 4:
            raise ConfigError(f"DRMN: model.hidden_dim ({self.hidden_dim}) must be divisible by "
                              f"model.heads ({self.heads}) and by 4 (sine code: half per axis, even)")


def scatter_mean_pixels(pixels: torch.Tensor, index: torch.Tensor, values: torch.Tensor,
                        valid: torch.Tensor | None = None) -> torch.Tensor:
    """Write every query's new features of its selected pixels into the pixel map at once.

    pixels: ``(B, C, h, w)``; index: ``(B, Q, k)`` flat pixel indices (distinct within a query);
    values: ``(B, Q, k, C)`` the new features; valid: ``(B, Q)`` bool or None (all valid).
    Returns ``(B, C, h, w)``: a pixel chosen by n >= 1 valid queries holds the mean of their n
    values, every other pixel keeps its feature. Invalid (padding) queries write nothing: their
    entries go to a spare slot that is dropped, so the sums over the valid ones are the same, in
    the same order, whatever the batch holds.
    """
    b, c, h, w = pixels.shape
    index = index.reshape(b, -1)                                          # (B, Q * k)
    if valid is not None:
        keep = valid[:, :, None].expand(-1, -1, values.shape[2]).reshape(b, -1)
        index = torch.where(keep, index, torch.full_like(index, h * w))  # h * w: the spare slot
    values = values.reshape(b, -1, c)
    total = values.new_zeros(b, h * w + 1, c).scatter_add(1, index[..., None].expand(-1, -1, c),
                                                          values)
    count = values.new_zeros(b, h * w + 1).scatter_add(1, index, values.new_ones(index.shape))
    total, count = total[:, :-1], count[:, :-1, None]
    flat = pixels.flatten(2).transpose(1, 2)                              # (B, hw, C)
    updated = torch.where(count > 0, total / count.clamp(min=1), flat)
    return updated.transpose(1, 2).reshape(b, c, h, w)


class RefinementRound(nn.Module):
    """One round of multi-round feature aggregation (Alg. 1, lines 18-25): re-encode each query's
    top-k pixels with deformable attention, update the query by cross-attention over them
    (Eq. 14-16), with ``pixel_update`` write the re-encoded pixels back into the pixel map (Eq. 26),
    and match again (Eq. 13)."""

    def __init__(self, dim: int, top_k: int, heads: int, points: int, ffn_dim: int,
                 dropout: float, levels: int = len(LEVELS), pixel_update: bool = False,
                 pixel_pos: bool = False) -> None:
        super().__init__()
        self.top_k = top_k
        self.pixel_update = pixel_update
        self.pixel_pos = pixel_pos
        self.reencode = DeformableEncoderLayer(dim, ffn_dim, dropout, levels, heads, points)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))

    def forward(self, queries: torch.Tensor, pixels: torch.Tensor, grid: torch.Tensor,
                logits: torch.Tensor, levels: FlatLevels, valid: torch.Tensor | None = None,
                padding: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """queries: ``(B, Q, C)``; pixels: ``(B, C, h, w)`` the current pixel map; grid:
        ``(B, C + 2, h, w)`` positional code then ``(x, y)`` centre in [0, 1] of every pixel;
        logits: ``(B, Q, h, w)``; levels: the first-stage encoded pyramid (``src`` is
        ``(B, S, C)``, its padding masked); valid: ``(B, Q)`` bool, False on padding queries
        (None: all real); padding: ``(B, h, w)`` bool, True on image padding, never selected.

        Returns the updated queries ``(B, Q, C)``, their new logits ``(B, Q, h, w)`` and the pixel
        map they were matched with ``(B, C, h, w)`` (``pixels`` itself without ``pixel_update``).
        """
        b, q, c = queries.shape
        if padding is not None:  # a padding pixel is no candidate (the choice has no gradient)
            logits = logits.masked_fill(padding[:, None], float("-inf"))
        index = top_pixel_indices(logits, self.top_k)                       # line 18, (B, Q, k)
        # One gather takes features, positional codes and centres together.
        top = gather_pixels(torch.cat([pixels, grid], 1), index)            # (B, Q, k, 2C+2)
        feats, pos, centres = top.split([c, c, 2], dim=-1)
        k = feats.shape[2]
        pos = pos.reshape(b, q * k, c)
        src = (feats + queries[:, :, None]).reshape(b, q * k, c)            # line 21
        if self.pixel_pos:  # line 21 literally: the code joins the features (so no second time)
            src, pos = src + pos, None
        reencoded = self.reencode(src, pos, centres.reshape(b, q * k, 2),
                                  levels.spatial_shapes, levels.level_start_index,
                                  levels.padding_mask, memory=levels.src)   # line 22
        if self.pixel_update:                                               # lines 21-22, Eq. (26)
            pixels = scatter_mean_pixels(pixels, index, reencoded.reshape(b, q, k, c), valid)
        context = reencoded.reshape(b * q, k, c)
        attended, _ = self.cross_attn(queries.reshape(b * q, 1, c), context, context,
                                      need_weights=False)                   # line 23, Eq. (14)
        updated = self.dropout(attended.reshape(b, q, c) + queries)         # Eq. (15)
        queries = self.ffn(self.norm(queries + updated))                    # Eq. (16)
        return queries, matching_logits(queries, pixels), pixels            # line 25, Eq. (13)


class DRMNHead(GroundingHead):
    """Deformable encoder over P2..P5 (or the coarsest ``encoder_levels``), initial matching,
    ``refine_rounds`` refinement rounds."""

    def __init__(self, cfg: DRMNConfig) -> None:
        super().__init__()
        dim = cfg.hidden_dim
        self.grid_level = GRID_LEVEL[cfg.neck_stride]
        self.first_encoded = len(LEVELS) - cfg.encoder_levels  # levels before it are only projected
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cfg.backbone.fpn_channels, dim, 1), nn.GroupNorm(num_groups(dim), dim))
            for _ in LEVELS)
        self.position = PositionEmbeddingSine(dim // 2, normalize=True)
        layer = DeformableEncoderLayer(dim, cfg.ffn_dim, cfg.dropout, cfg.encoder_levels, cfg.heads,
                                       cfg.points)
        self.encoder = DeformableEncoder(layer, cfg.encoder_layers) if cfg.encoder_layers > 0 else None
        self.neck_proj = (nn.Conv2d(cfg.neck_channels, dim, 1) if cfg.neck_fusion == "add" else None)
        self.uses_neck = self.neck_proj is not None
        self.rounds = nn.ModuleList(
            RefinementRound(dim, cfg.top_k, cfg.heads, cfg.points, cfg.ffn_dim, cfg.dropout,
                            cfg.encoder_levels, cfg.pixel_update, cfg.pixel_pos)
            for _ in range(cfg.refine_rounds))
        self.first_supervised_round = 1 if cfg.loss_rounds == "refined" else 0

    def forward(self, features: dict[str, torch.Tensor], queries: torch.Tensor,
                valid: torch.Tensor | None = None) -> list[torch.Tensor]:
        """features: ``"p2".."p5"`` ``(B, C_fpn, H/4..H/32, W/4..W/32)`` and, with
        ``neck_fusion="add"``, ``"neck"`` ``(B, C_neck, H/s, W/s)``; queries: ``(B, Q, C)``;
        valid: ``(B, Q)`` bool, False on padding queries (they update no pixel), None: all real;
        ``features["padding"]`` (optional): ``(B, H/4, W/4)`` bool, True on image padding, masked
        in the encoder, the positional codes and the refinement's sampling and top-k ->
        ``I + 1`` x ``(B, Q, H/s, W/s)`` logits, s = ``neck_stride`` (the matching grid's)."""
        masks = level_padding(features.get("padding"), [features[name] for name in LEVELS])
        levels = self.encode_levels(features, masks)
        pixels = self.fuse(levels, features)
        grid_mask = None if masks is None else masks[self.grid_level]
        grid = self.pixel_grid(pixels, grid_mask)
        encoded_masks = None if masks is None else masks[self.first_encoded:]
        flat = flatten_levels(levels[self.first_encoded:], masks=encoded_masks)
        logits = matching_logits(queries, pixels)                           # Eq. (12)
        outputs = [logits]
        for refine in self.rounds:
            queries, logits, pixels = refine(queries, pixels, grid, logits, flat, valid, grid_mask)
            outputs.append(logits)
        return outputs

    def encode_levels(self, features: dict[str, torch.Tensor],
                      masks: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """P2..P5 -> 4 maps ``(B, C, H_l, W_l)``: projected, then the coarsest ``encoder_levels``
        encoded (Alg. 1, lines 3-12); masks: 4 maps ``(B, H_l, W_l)`` bool, True on padding.

        Without encoder layers (the ablation T = 0) the projected levels are used as they are.
        """
        projected = [proj(features[name]) for proj, name in zip(self.input_proj, LEVELS)]
        if self.encoder is None:
            return projected
        kept, encoded = projected[:self.first_encoded], projected[self.first_encoded:]
        encoded_masks = None if masks is None else masks[self.first_encoded:]
        codes = [self.position(x, None if encoded_masks is None else encoded_masks[i])
                 for i, x in enumerate(encoded)]
        return kept + self.encoder.encode_maps(encoded, codes, encoded_masks)

    def fuse(self, levels: list[torch.Tensor], features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Resize every level to the matching grid and average (Eq. 10-11) -> ``(B, C, H/s, W/s)``."""
        size = levels[self.grid_level].shape[-2:]
        pixels = torch.stack([x if x.shape[-2:] == size
                              else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
                              for x in levels]).mean(0)
        if self.neck_proj is not None:
            pixels = pixels + self.neck_proj(features["neck"])
        return pixels

    def pixel_grid(self, pixels: torch.Tensor, padding: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """Positional code and normalised ``(x, y)`` centre of every pixel: ``(B, C + 2, h, w)``.

        The centres are fractions of the padded map, as Deformable DETR's reference points (a
        centre over the valid part, scaled by the valid ratio, is the same number)."""
        b, _, h, w = pixels.shape
        shape = torch.tensor([[h, w]], device=pixels.device)
        centres = DeformableEncoder.reference_points(shape, pixels.new_ones(b, 1, 2))  # (B, hw, 1, 2)
        centres = centres.reshape(b, h, w, 2).permute(0, 3, 1, 2)
        return torch.cat([self.position(pixels, padding), centres], 1)


def level_padding(padding: torch.Tensor | None, levels: list[torch.Tensor]
                  ) -> list[torch.Tensor] | None:
    """The stride-4 padding mask ``(B, H/4, W/4)`` on every level's grid: a level-l cell is
    padding when its first stride-4 cell is (cell j of stride s starts at pixel j * s). None when
    no image of the batch is padded, so unpadded batches run exactly as before."""
    if padding is None or not padding.any():
        return None
    masks = []
    for level in levels:
        h, w = level.shape[-2:]
        step = padding.shape[-2] // h
        masks.append(padding[:, ::step, ::step][:, :h, :w])
    return masks


def build_drmn(cfg: DRMNConfig, **parts: nn.Module) -> GroundingModel:
    """DRMN from its config: the shared grounding model around a :class:`DRMNHead`
    (``parts``: ``backbone=``, ``text_encoder=`` shared with another model)."""
    return build_grounding(cfg, DRMNHead(cfg), **parts)
