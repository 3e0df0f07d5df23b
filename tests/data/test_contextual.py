"""VL-NMS's pseudo ground truth of contextual objects: nouns, the cosine threshold, the no-noun case."""
from dataclasses import dataclass

import pytest
import torch

from groundkit.data.contextual import GAMMA, contextual_objects, expression_nouns, similar_names
from groundkit.errors import InputError

COCO = ["person", "sports ball", "traffic light", "hot dog", "dog", "orange", "tie", "pony", "truck"]


@pytest.mark.parametrize("expression,nouns", [
    ("a cat laying down on a white towel next to some keys.", ["cat", "towel", "keys"]),  # the paper's
    ("man in red shirt on left", ["man", "shirt"]),
    ("person holding umbrella far right", ["person", "umbrella"]),
    ("The leftmost small red circle", ["circle"]),
    ("orange object under the yellow ring", ["object", "ring"]),
    ("woman's purse", ["woman", "purse"]),
    ("closest building, partially visible", ["building"]),
    ("the ball in the air", ["ball", "air"]),
])
def test_nouns_of_short_expressions(expression, nouns):
    assert expression_nouns(expression) == nouns


def test_category_names_are_nouns_in_the_singular_even_of_several_words():
    assert expression_nouns("two traffic lights near hot dogs", COCO) == ["traffic light", "hot dog"]
    assert expression_nouns("Ponies and a dog, the dog on the left", COCO) == ["pony", "dog"]
    # A name that is also a colour is a noun only when no noun follows it.
    assert expression_nouns("the orange on the left", COCO) == ["orange"]
    assert expression_nouns("guy in orange shirt", COCO) == ["guy", "shirt"]
    assert expression_nouns("guy in orange shirt") == ["guy", "shirt"]  # without the vocabulary


@pytest.mark.parametrize("expression", ["the one on the left", "left", "second from left",
                                        "the big red one at the top", "", "!!"])
def test_expressions_without_a_noun(expression):
    assert expression_nouns(expression, COCO) == []


@dataclass
class Ann:
    id: int
    category_id: int
    iscrowd: bool = False


NAMES = {1: "cat", 2: "dog", 3: "car", 4: "sofa"}
# Word vectors whose cosines are exact in floating point (unit norms, dyadic components):
# kitten . cat = 0.75, kitten . dog = 0.5, kitten . car = 0, kitten . sofa = -1; dog . car = 0.
VECTORS = {"kitten": [1, 0, 0, 0, 0, 0, 0, 0], "cat": [0.75] + [0.25] * 7,
           "dog": [0.5, 0, 0.5, 0.5, 0.5, 0, 0, 0], "car": [0, 1, 0, 0, 0, 0, 0, 0],
           "sofa": [-1, 0, 0, 0, 0, 0, 0, 0]}


class FakeEmbed:
    """The word vectors above; records the calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, words):
        self.calls.append(list(words))
        return torch.tensor([VECTORS[w] for w in words])


IMAGE = [Ann(10, 1), Ann(11, 1), Ann(12, 2), Ann(13, 3), Ann(14, 4), Ann(15, 2, iscrowd=True)]


@pytest.mark.parametrize("gamma,expected", [(0.0, [11, 12, 13]), (GAMMA, [11, 12]), (0.5, [11, 12]),
                                            (0.51, [11]), (0.75, [11]), (0.76, [])])
def test_gamma_threshold(gamma, expected):
    # The referent (10) is never returned, nor the crowd of dogs (15); cosine >= gamma counts.
    assert contextual_objects("the kitten", 10, IMAGE, NAMES, FakeEmbed(), gamma) == expected


def test_the_embedding_is_injected_and_called_once_with_nouns_then_names():
    embed = FakeEmbed()
    assert contextual_objects("the kitten on a dog", 10, IMAGE, NAMES, embed) == [11, 12]
    assert embed.calls == [["kitten", "dog", "car", "cat", "dog", "sofa"]]
    # A name equal to a noun always counts, whatever the rounding: gamma = 1 is exact matches.
    assert contextual_objects("the dog", 10, IMAGE, NAMES, embed, 1.0) == [12]


def test_no_noun_no_contextual_objects():
    def embed(words):
        raise AssertionError("nothing to compare: the embedding must not be called")
    assert contextual_objects("the one on the left", 10, IMAGE, NAMES, embed) == []
    assert contextual_objects("the kitten", 10, [Ann(10, 1)], NAMES, embed) == []  # no other object


def test_bad_embeddings_and_unknown_categories_are_clear_errors():
    with pytest.raises(InputError, match=r"embed: expected a \(5, D\) tensor for 5 words, got \(4, 2\)"):
        contextual_objects("the kitten", 10, IMAGE, NAMES, lambda w: torch.zeros(4, 2))
    with pytest.raises(InputError, match=r"category ids \[9\]"):
        contextual_objects("the kitten", 10, [Ann(1, 9)], NAMES, FakeEmbed())
    with pytest.raises(InputError, match="expression: expected a string"):
        expression_nouns(None)


def test_similar_names_of_nothing():
    assert similar_names([], ["cat"], FakeEmbed()) == set() == similar_names(["cat"], [], FakeEmbed())
