import pytest

from genixer_ray.tasks import TASKS, ParseError, parse_output, parse_regions


def test_registry_has_the_nine_tasks():
    assert len(TASKS) == 9
    assert {t.group for t in TASKS.values()} == {"generic", "grounding"}


def test_common_vqa():
    p = parse_output("Question: What animal is on the sofa? Answer: A cat.", "common_vqa")
    assert (p.question, p.answer, p.task) == ("What animal is on the sofa?", "A cat.", "common_vqa")


def test_multi_choice():
    text = "Question: What color is the bus? Options: (A) red (B) blue (C) green Answer: (B) blue"
    p = parse_output(text, "multi_choice_vqa")
    assert p.options == ["(A) red", "(B) blue", "(C) green"]
    assert p.answer_letter == "B"
    with pytest.raises(ParseError) as e:
        parse_output("Question: Which? (A) x (B) y Answer: (E) z", "multi_choice_vqa")
    assert e.value.code == "answer_not_in_options"
    # A listed letter with another text contradicts its option (seen from the demo generator).
    with pytest.raises(ParseError) as e:
        parse_output("Question: Color? (A) red (B) blue Answer: (B) red", "multi_choice_vqa")
    assert e.value.code == "answer_not_in_options" and "contradicts" in str(e.value)
    assert parse_output("Question: Color? (A) red (B) dark blue Answer: B. It is dark blue.", None).answer_letter == "B"
    assert parse_output("Question: Color? (A) red (B) blue Answer: (A)", None).answer_letter == "A"
    with pytest.raises(ParseError) as e:
        parse_output("Question: Which one? Answer: the left one", "multi_choice_vqa")
    assert e.value.code == "too_few_options"


def test_rec_and_reg_boxes():
    p = parse_output("Question: Where is the man in red? Answer: [0.100,0.200,0.500,0.900]", "rec")
    assert p.answer_boxes == [[0.1, 0.2, 0.5, 0.9]]
    p = parse_output("Question: What is in [0.1,0.2,0.3,0.4;0.5,0.5,0.9,0.9]? Answer: two dogs", "reg")
    assert len(p.question_boxes) == 2
    with pytest.raises(ParseError) as e:
        parse_output("Question: Where is the cat? Answer: on the left", "rec")
    assert e.value.code == "no_box_in_answer"
    with pytest.raises(ParseError) as e:
        parse_output("Question: Where? Answer: [0.5,0.2,0.4,0.9]", "rec")
    assert e.value.code == "bad_box"


@pytest.mark.parametrize("box", ["[0.2,0.2,0.2,0.5]", "[0.1,0.1,1.2,0.5]", "[-0.1,0.0,0.5,0.5]", "[0.1,0.6,0.5,0.5]"])
def test_box_validity(box):
    with pytest.raises(ParseError):
        parse_regions(box)


def test_points_and_pointqa():
    p = parse_output("Question: What is at [0.250,0.750]? Answer: a cup", "pointqa")
    assert p.points == [[0.25, 0.75]]
    with pytest.raises(ParseError) as e:
        parse_output("Question: What is here? Answer: a cup", "pointqa")
    assert e.value.code == "no_region_in_question"


def test_dialogues():
    text = "Question: What is this? Answer: A kitchen. Question: Is it clean? Answer: Yes."
    p = parse_output(text, "multi_turn_dialogue")
    assert len(p.turns) == 2 and p.turns[1] == {"question": "Is it clean?", "answer": "Yes."}
    with pytest.raises(ParseError) as e:
        parse_output("Question: What is this? Answer: A kitchen.", "multi_turn_dialogue")
    assert e.value.code == "too_few_turns"
    rd = "Question: Who is at [0.1,0.1,0.4,0.9]? Answer: A chef. Question: What does he hold? Answer: A pan [0.3,0.4,0.5,0.6]."
    p = parse_output(rd, "referential_dialogue")
    assert p.question_boxes and p.answer_boxes
    with pytest.raises(ParseError) as e:
        parse_output(text, "referential_dialogue")
    assert e.value.code == "no_box_in_dialogue"


def test_q_ca_needs_cited_boxes():
    p = parse_output("Question: Is it safe? Answer: The man [0.1,0.1,0.3,0.9] wears a helmet [0.1,0.1,0.3,0.2], so yes.", "q_ca")
    assert len(p.answer_boxes) == 2


@pytest.mark.parametrize("text, code", [("gibberish output", "no_question_answer"), ("Question: Answer: x", "empty_field")])
def test_malformed(text, code):
    with pytest.raises(ParseError) as e:
        parse_output(text, None)
    assert e.value.code == code


def test_agnostic_output_gets_an_inferred_task():
    assert parse_output("Question: Where is the dog? Answer: [0.1,0.2,0.3,0.4]", None).task == "rec"
    assert parse_output("Question: Color? (A) red (B) blue Answer: A", None).task == "multi_choice_vqa"
    assert parse_output("Question: a? Answer: b. Question: c? Answer: d.", None).task == "multi_turn_dialogue"
    assert parse_output("Question: What is it? Answer: a cat", None).task == "common_vqa"


def test_format_then_parse_round_trips():
    from genixer_ray.tasks import format_boxes, qa_text

    boxes = [[0.1, 0.25, 0.5, 0.75], [0.0, 0.0, 1.0, 1.0]]
    text = qa_text([("Where are the dogs?", f"Here {format_boxes(boxes)}.")])
    assert text == "Question: Where are the dogs? Answer: Here [0.100,0.250,0.500,0.750;0.000,0.000,1.000,1.000]."
    assert parse_output(text, "rec").answer_boxes == boxes
    assert format_boxes([[1.2, -0.1]]) == "[1.000,0.000]"  # clamped to the image
