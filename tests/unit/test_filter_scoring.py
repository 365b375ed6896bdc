"""Filter scoring that needs no model: selection policies and self-consistency agreement."""

import pytest

from genixer_ray.filters.consistency import agreement, box_iou, normalize_answer, token_f1
from genixer_ray.filters.policies import PAPER_BAND, select_band, select_threshold, select_top_fraction


def test_band_keeps_exactly_the_rows_inside_it():
    scores = [0.49, 0.5, 0.6, 0.7, 0.71, None, float("nan"), 0.0, 1.0]
    assert select_band(scores, *PAPER_BAND) == [False, True, True, True, False, False, False, False, False]
    with pytest.raises(ValueError):
        select_band(scores, 0.8, 0.2)


def test_threshold_and_unscored_rows():
    assert select_threshold([0.2, 0.5, None, 0.9], 0.5) == [False, True, False, True]


def test_top_fraction_is_per_task_and_deterministic():
    scores = [0.9, 0.1, 0.5, 0.5, 0.8, None, 0.3]
    tasks = ["rec", "rec", "rec", "vqa", "vqa", "vqa", "vqa"]
    # rec: 3 scored -> ceil(0.5 * 3) = 2 best (0.9, 0.5); vqa: 3 scored -> 2 best (0.8, 0.5)
    assert select_top_fraction(scores, tasks, 0.5) == [True, False, True, True, True, False, False]
    tie = select_top_fraction([0.5, 0.5, 0.5], ["t", "t", "t"], 0.34)
    assert tie == [True, True, False]  # ties go to earlier rows
    assert select_top_fraction(scores, tasks, 0.0) == [False] * 7


def test_text_agreement():
    assert normalize_answer("The Cat, sleeping!") == "cat sleeping"
    assert token_f1("a red bus", "The red bus.") == 1.0
    assert token_f1("red bus", "blue car") == 0.0
    assert token_f1("a big red bus", "red car") == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert agreement("On the left.", "on the left", task="common_vqa") == 1.0


def test_option_letter_agreement():
    assert agreement("(B) into space", "B", task="multi_choice_vqa") == 1.0
    assert agreement("(B) into space", "(C) to the shop", task="multi_choice_vqa") == 0.0
    assert agreement("(B)", "no letter here", task="multi_choice_vqa") == 0.0


def test_box_agreement_by_iou():
    assert box_iou([0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]) == 1.0
    assert box_iou([0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]) == 0.0
    assert box_iou([0, 0, 0.4, 0.4], [0.2, 0.2, 0.6, 0.6]) == pytest.approx(0.04 / 0.28)
    assert agreement("[0.1,0.1,0.5,0.5]", "It is at [0.1,0.1,0.5,0.5].", task="rec") == 1.0
    assert agreement("[0.1,0.1,0.5,0.5]", "somewhere", task="rec") == 0.0
    assert agreement("[0.1,0.1,0.5,0.5]", "[0.9,0.1,0.5,0.5]", task="rec") == 0.0  # malformed re-answer box


def test_a_reanswer_in_the_generators_format_is_compared_by_its_answer():
    # A Genixer generator asked its own question writes a whole pair: only the answer counts,
    # and a box in the re-asked question is not an answer box.
    assert agreement("a red bus", "Question: What is parked? Answer: The red bus.", task="common_vqa") == 1.0
    again = "Question: What is in the region [0.1,0.2,0.5,0.9]? Answer: a dog"
    assert agreement("[0.100,0.200,0.500,0.900]", again, task="rec") == 0.0
    assert agreement("[0.100,0.200,0.500,0.900]", "Answer: [0.1,0.2,0.5,0.9]", task="rec") == 1.0
