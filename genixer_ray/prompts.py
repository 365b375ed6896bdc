"""Prompt profiles: how the generator's instruction is built (Genixer, step 2).

Two levels: a *generic* instruction asks for a question and its answer about the image; in
task-specific mode a *task sentence* naming the task follows it. Generic alone drives
task-agnostic generation. Training builds instructions the same way, so a generator is prompted
at generation time exactly as it was trained.

A profile fixes the task sentences, the separator before them and any fixed instruction:

* ``genixer-ray``: this project's sentences (:data:`genixer_ray.tasks.TASKS`), joined with a space.
* ``genixer-l``: the released LLaVA-based Genixer generator (``model_genixer_eval.py`` in the
  Genixer repository): its Common, Multi-choice and Adversarial VQA sentences appended after a
  newline, and one fixed instruction for multi-turn dialogue.
* ``genixer-s``: the released Shikra-based generator (its ``Gen*`` datasets): REC, REG, PointQA,
  RD and Q->CA sentences appended after a space.

The generic pool and the REC/REG question phrasings default to this project's own; a user's JSON
file (a list of strings, the shape of Genixer's ``GenQA_general_instructions.json``,
``REC_question.json`` and ``REG_question.json``) replaces them (``prompts.*`` in a config).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from genixer_ray.seeding import derive_seed, sample_id
from genixer_ray.tasks import TASKS

# Our own phrasings of "look at the image, write a question and its answer" (step 2's generic level).
GENERIC_INSTRUCTIONS: tuple[str, ...] = (
    "Look at the image and write one question about it together with its answer.",
    "Study this picture, then pose a question about it and answer that question.",
    "Write a question that this image can answer, followed by the answer.",
    "Examine the image carefully and produce a question-answer pair about its content.",
    "Create a question about the picture and give the correct answer.",
    "Based on what you see, compose a question and provide its answer.",
    "Generate a question grounded in this image, then answer it.",
    "Observe the photo and write a question someone might ask about it, with the answer.",
    "Come up with a question about the visual content and reply to it accurately.",
    "Inspect the image, formulate a question on it, and state the answer.",
    "Think of something worth asking about this image; write the question and its answer.",
    "Write a question whose answer can be found in the image, and give that answer.",
    "Produce one question and one answer that are both about this picture.",
    "Describe the image through a question and its answer.",
    "From the image, draft a question and answer it correctly.",
    "Ask a question about this image and then answer it yourself.",
    "Please read the image and write a question about it with the matching answer.",
    "Design a question that tests understanding of this image, and provide the answer.",
    "Look closely at the picture; write a question on a detail and answer it.",
    "Formulate a question about the scene in the image and give a truthful answer.",
    "Use the image to write a question and a correct answer to it.",
    "Write an instruction-style question about the image along with its response.",
    "Create a visual question about this picture and supply its answer.",
    "Given this image, produce a question and the answer to that question.",
    "Compose a question about the objects or events in the image and answer it.",
    "Pose a question that requires looking at the image, then answer it.",
    "Write down a question about this photograph and its answer.",
    "Make up a question about what is visible here and answer it precisely.",
    "Generate a question-and-answer pair that is faithful to the image.",
    "Write a question a curious viewer could ask about this image, and answer it.",
    "Look at the visual content and create a question plus its answer.",
    "Invent a question about the picture that has a clear answer, and give the answer.",
    "Analyze the image, then write a relevant question and its answer.",
    "Provide a question about the image and the answer, in that order.",
    "Write a question about the main subject of the image and answer it.",
    "Craft a question from the image's content and reply with the answer.",
    "Create one question that the image answers, and write that answer.",
    "Glance over the image, then write a question and an accurate answer.",
    "Produce a question referring to the image and answer it concisely.",
    "Write a question and answer that someone could verify by looking at the image.",
    "Turn what you see in the picture into a question with its answer.",
    "Generate a question about this image that a person could answer by looking, and answer it.",
    "Ask about something in the picture and provide the right answer.",
    "Write a question that is specific to this image and give its answer.",
    "Consider the image and write a question-answer pair about it.",
    "Look at the picture and produce a question followed by a correct reply.",
    "Create a question about the image's content and state the correct answer.",
    "Read the scene in the image, write a question about it, and answer.",
    "Write a question on the visual details of this image and answer it.",
    "Think about the image and produce a question together with the correct answer.",
    "Prepare a question about this image for a visual quiz, including the answer.",
    "Write a question that draws on the image and answer it faithfully.",
    "Generate one question about the picture and provide a correct, short answer.",
    "Formulate a question using information in the image and answer it.",
)

# Our own phrasings of REC questions (``<expr>``: the referring expression) and REG questions
# (``<objs>``: the region's box), the placeholders of Genixer's REC_question.json/REG_question.json.
REC_QUESTIONS: tuple[str, ...] = (
    "Where is <expr>?",
    "Where is <expr> in the image?",
    "Locate <expr> and give its coordinates.",
    "What are the coordinates of <expr>?",
    "Find <expr> in the picture.",
    "Which region shows <expr>?",
    "Point out <expr> with a box.",
    "Give the bounding box of <expr>.",
    "In which part of the image is <expr>?",
    "Show me where <expr> is.",
    "Can you find <expr> and tell me its position?",
    "Mark <expr> in the image.",
)
REG_QUESTIONS: tuple[str, ...] = (
    "What is in the region <objs>?",
    "Describe the object at <objs>.",
    "What does the region <objs> show?",
    "Give a short description of <objs>.",
    "What can you see at <objs>?",
    "Name the object inside <objs>.",
    "Refer to the object at <objs> so that it can be told apart from the rest.",
    "What is located at <objs>?",
    "Tell me what <objs> contains.",
    "Write an expression for the object in <objs>.",
    "Which object is at <objs>?",
    "How would you describe the thing at <objs>?",
)

# The fixed instruction the LLaVA-based Genixer generator was given for multi-turn dialogue.
GENIXER_L_DIALOGUE = (
    "Design a conversation between you and a person asking about this photo. The answers should be in a tone "
    "that a visual AI assistant is seeing the image and answering the question. Ask diverse questions and give "
    "corresponding answers."
)


@dataclass(frozen=True)
class PromptProfile:
    """Task sentences, the separator before them and fixed instructions of one prompt style."""

    name: str
    separator: str
    sentences: dict[str, str]
    fixed: dict[str, str] = field(default_factory=dict)  # task -> instruction used instead of generic + sentence
    generic: tuple[str, ...] = GENERIC_INSTRUCTIONS
    rec_questions: tuple[str, ...] = REC_QUESTIONS
    reg_questions: tuple[str, ...] = REG_QUESTIONS

    @property
    def tasks(self) -> set[str]:
        """The tasks this profile can name (task-specific mode)."""
        return set(self.sentences) | set(self.fixed)

    def specific(self, generic: str, task: str) -> str:
        """The task-specific instruction for ``task`` after the generic instruction ``generic``."""
        return self.fixed.get(task) or f"{generic}{self.separator}{self.sentences[task]}"


PROFILES: dict[str, PromptProfile] = {
    "genixer-ray": PromptProfile("genixer-ray", " ", {t.id: t.sentence for t in TASKS.values()}),
    "genixer-l": PromptProfile(
        "genixer-l", "\n",
        {
            "common_vqa": "This is the Common VQA task.",
            "multi_choice_vqa": "This is a Multi-choice VQA task.",
            "adversarial_vqa": "This is an Adversarial-based VQA task.",
        },
        fixed={"multi_turn_dialogue": GENIXER_L_DIALOGUE},
    ),
    "genixer-s": PromptProfile(
        "genixer-s", " ",
        {
            "rec": "This is a Referring Expression Comprehension (REC) task. The question will give an expression "
                   "of a specific region of the image. Please provide the coordinates in the answer.",
            "reg": "This is a Referring Expression Generation (REG) task. The purpose of REG is to generate a unique "
                   "description for a specified location.",
            "pointqa": "This is a PointQA task.",
            "referential_dialogue": "This is a Referential Dialogue task.",
            "q_ca": "This is a QCA with box task.",
        },
    ),
}


def build_profile(name: str, *, generic=None, rec_questions=None, reg_questions=None) -> PromptProfile:
    """The named profile, with the generic pool and REC/REG phrasings replaced where given."""
    base = PROFILES[name]
    return PromptProfile(
        base.name, base.separator, base.sentences, base.fixed,
        tuple(generic or base.generic), tuple(rec_questions or base.rec_questions), tuple(reg_questions or base.reg_questions),
    )


@dataclass(frozen=True)
class PromptChoice:
    """The instruction chosen for one image, and what produced it (recorded as provenance)."""

    instruction: str
    template_id: str  # "g<index>" of the generic instruction, or "fixed" for a fixed instruction
    task: str | None  # the task id in task-specific mode, None in task-agnostic mode
    mode: str  # "agnostic" or "specific"


def choose_prompt(
    image_id: str, *, seed: int, mode: str, task_mix: dict[str, float], profile: PromptProfile, avoid: frozenset[str] = frozenset(),
) -> PromptChoice:
    """Pick the generic instruction (and, in task-specific mode, the task) for one image.

    The choice depends only on ``(seed, image_id, avoid)``, so re-runs and resumed runs repeat it.

    Args:
        image_id: the image's stable id (a sample's :func:`~genixer_ray.seeding.sample_id`).
        seed: the run seed.
        mode: ``"agnostic"`` (generic instruction only) or ``"specific"`` (plus a task sentence).
        task_mix: task id -> relative weight, used in task-specific mode (tasks of ``profile``).
        profile: the prompt profile (sentences, separator, pools).
        avoid: tasks not to draw (the image's earlier samples took them); a weighted task must remain.
    """
    rng = random.Random(derive_seed(seed, f"prompt:{image_id}"))
    idx = rng.randrange(len(profile.generic))
    generic = profile.generic[idx]
    if mode == "agnostic":
        return PromptChoice(generic, f"g{idx:02d}", None, mode)
    tasks = sorted(t for t, w in task_mix.items() if w > 0 and t not in avoid)
    task = rng.choices(tasks, weights=[task_mix[t] for t in tasks])[0]
    template = "fixed" if task in profile.fixed else f"g{idx:02d}"
    return PromptChoice(profile.specific(generic, task), template, task, mode)


def choose_prompts(image_id: str, samples: int, *, seed: int, mode: str, task_mix: dict[str, float], profile: PromptProfile) -> list[PromptChoice]:
    """The prompts of an image's ``samples`` samples (sample 0's is :func:`choose_prompt`'s for the image).

    In task-specific mode an image's samples take different tasks, drawn by weight from those
    not yet taken, until every task of ``task_mix`` is taken; then a new round begins. Each
    sample's draw is keyed by its :func:`~genixer_ray.seeding.sample_id`.
    """
    out: list[PromptChoice] = []
    taken: set[str] = set()
    tasks = {t for t, w in task_mix.items() if w > 0}
    for s in range(samples):
        if taken >= tasks:
            taken.clear()
        choice = choose_prompt(sample_id(image_id, s), seed=seed, mode=mode, task_mix=task_mix, profile=profile, avoid=frozenset(taken))
        out.append(choice)
        if choice.task:
            taken.add(choice.task)
    return out


def referring_question(profile: PromptProfile, task: str, referring: dict, rng: random.Random) -> tuple[str, str, str]:
    """``(question, answer, phrasing id)`` of a REC or REG sample from the profile's phrasing pool.

    REC asks about the expression and answers with the box; REG the other way round.
    """
    if task == "rec":
        k = rng.randrange(len(profile.rec_questions))
        return profile.rec_questions[k].replace("<expr>", referring["expression"]), referring["region"], f"rec{k:02d}"
    k = rng.randrange(len(profile.reg_questions))
    return profile.reg_questions[k].replace("<objs>", referring["region"]), referring["expression"], f"reg{k:02d}"
