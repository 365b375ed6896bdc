"""Property-based tests: whatever text a model writes, parsers and scorers give a documented code
or a value, never an exception."""

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genixer_ray.export import llava_record
from genixer_ray.export_shikra import rec_expression, shikra_records
from genixer_ray.filters.clip import region_texts, strip_regions
from genixer_ray.filters.consistency import agreement, answer_part
from genixer_ray.filters.judge import says_yes
from genixer_ray.schema import ERROR_CODES
from genixer_ray.tasks import TASKS, ParseError, parse_output

NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str), st.integers(-10**12, 10**12).map(str),
    st.sampled_from(["nan", "inf", "-0", "1e309", "0.5", "1.000", "-0.1", "", "..", "1,2"]),
)
BOX = st.lists(NUMBER, min_size=0, max_size=6).map(lambda xs: "[" + ",".join(xs) + "]")
PIECES = st.one_of(
    st.text(max_size=40), BOX, st.sampled_from([
        "Question:", "Answer:", "Options:", "(A)", "(B) ", "(Z)", "<script>alert(1)</script>", "<b>", "\x00", "\ufffd", "]", "[",
        ";", "Yes", "No", "\n", "Question: Answer:", "[0.1,0.2,0.3,0.4;0.5,0.5]",
    ]),
)
TEXT = st.one_of(st.lists(PIECES, max_size=25).map(" ".join), st.text(max_size=200), st.just("x" * 10_000))
TASK = st.sampled_from([None, *TASKS])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, TASK)
def test_parse_output_gives_a_parse_or_a_documented_code(text, task):
    try:
        p = parse_output(text, task)
    except ParseError as e:
        assert e.code in ERROR_CODES
        return
    assert p.task in TASKS and p.question and p.answer
    for b in p.question_boxes + p.answer_boxes:
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in b) and b[0] < b[2] and b[1] < b[3]
    # What a parse gives is what the filters and both exports take.
    row = {"image_id": "i", "question": p.question, "answer": p.answer, "turns": p.turns, "parsed_task": p.task,
           "question_boxes": p.question_boxes, "answer_boxes": p.answer_boxes, "points": p.points,
           "image_width": 640, "image_height": 480}
    region_texts(row)
    llava_record(row, "x.jpg")
    shikra_records(row, "x.jpg")


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT, TASK)
def test_agreement_is_a_number_in_0_1(generated, again, task):
    score = agreement(generated, again, task=task)
    assert 0.0 <= score <= 1.0


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_text_helpers_never_raise(text):
    assert isinstance(strip_regions(text), str) and isinstance(answer_part(text), str)
    assert isinstance(rec_expression(text), str) and isinstance(says_yes(text), bool)
