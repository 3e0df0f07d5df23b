"""The papers' published numbers sit in the rows of their family's scores."""
import numpy as np
import pytest

from groundkit.engine.grounding import GroundingEvaluation
from groundkit.engine.panoptic import PanopticEvaluation
from groundkit.engine.referring import ReferringEvaluation
from groundkit.metrics.files import PhraseIoUs
from groundkit.models import model_spec_of, model_types
from groundkit.models.published import PUBLISHED, published

GROUPS = ("All", "Things", "Stuff")
EVALUATIONS = {
    "grounding": GroundingEvaluation(PhraseIoUs(np.array([0.2, 0.9]), np.array([True, False]),
                                                np.array([1, 2]))),
    "panoptic": PanopticEvaluation({g: {"pq": 0.5, "sq": 0.8, "rq": 0.6, "n": 1} for g in GROUPS}),
    "referring": ReferringEvaluation({"all": {"rec": {"acc@0.5": 0.5, "n": 2},
                                              "res": {"oiou": 0.4, "miou": 0.3}}}),
}


@pytest.mark.parametrize("model_type", sorted(PUBLISHED))
def test_published_scores_are_keyed_as_the_family_logs_its_metrics(model_type):
    assert model_type in model_types()
    keys = set(EVALUATIONS[model_spec_of(model_type).family].log_metrics())
    for paper in published(model_type):
        assert paper.scores and set(paper.scores) <= keys, paper.method
        assert all(0 < v < 100 for v in paper.scores.values())


def test_a_model_type_without_a_paper_has_none():
    assert published("no-such-model") == ()
