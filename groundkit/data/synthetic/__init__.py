"""The embedded default data: a synthetic panoptic narrative grounding benchmark.

Scenes of textured stuff regions (sky, grass, water, ...) under coloured, overlapping shapes, with
narratives whose noun phrases are grounded to panoptic segments and RefCOCO-style referring
expressions, written in the real file formats (see ``writer``). Grounding needs the words: the
same shape comes in several colours and the same colour on several shapes, and singular phrases
pick out their instance by colour, size or position.
"""
from groundkit.data.synthetic.scene import CATEGORIES
from groundkit.data.synthetic.writer import generate_benchmark

__all__ = ["CATEGORIES", "generate_benchmark"]
