"""The tiny models' tokenizer: a byte-level BPE trained here with ``tokenizers`` on sentences in
the shape of Genixer's prompts and targets, with the ``<image>`` token and LLaVA-1.5's chat template."""

from __future__ import annotations

import random

from genixer_ray.filters.rating import AXIS_QUESTIONS, SCALE

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]

# LLaVA-1.5's conversation format. Content may be a string or a list of typed parts; the image
# part becomes the image token on its own line, as in the original prompts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] if message['content'] is string else message['content'][0]['text'] }} "
    "{% elif message['role'] == 'user' %}USER: "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: {% endif %}"
    "{% if message['role'] != 'system' %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %} {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)



def _tokenizer_corpus(seed: int) -> list[str]:
    """Sentences in the shape of Genixer's prompts and targets, so common pieces get single tokens."""
    rng = random.Random(seed)
    things = "cat dog person man woman child car bus bicycle motorcycle rocket astronaut coffee cup plate table tree sky road building window flag helmet suit star galaxy ball shirt".split()
    colors = "red blue green white black yellow orange brown gray purple".split()
    wh = ["What is", "What color is", "Where is", "How many", "Is there", "Which object is", "Why is", "Who is"]
    lines = [
        "USER: ASSISTANT: Question: Answer: Yes No yes no A B C D Options: (A) (B) (C) (D)",
        "Look at the image and write one question about it together with its answer.",
        "This is a Multi-choice VQA task. This is a Referring Expression Comprehension (REC) task.",
        "Please provide the coordinates in the answer. Is the answer to the question true for the image?",
    ]
    # A judge's P(Yes) is read at the first answer position, which needs "Yes" and "No" (with and
    # without the leading space) to be single tokens, as they are in real vocabularies.
    lines += ["ASSISTANT: Yes", "ASSISTANT: No", "Yes.", "No."] * 50
    # The rater's scale and questions, as the judge's question above: their words tokenized as a
    # real vocabulary tokenizes English, not letter by letter (which would weigh the rater's text
    # against the image's 256 tokens some 2x more than a real judge does).
    lines += [SCALE, *AXIS_QUESTIONS.values()] * 100
    for _ in range(3000):
        a, b = rng.choice(things), rng.choice(things)
        c = rng.choice(colors)
        box = ",".join(f"{rng.random():.3f}" for _ in range(4))
        lines.append(
            f"Question: {rng.choice(wh)} the {c} {a} near the {b}? Answer: The {a} is {c}. "
            f"The {a} [{box}] is next to the {b}. There are {rng.randint(0, 12)} {b}s."
        )
    return lines


def build_tokenizer(seed: int = 0, vocab_size: int = 1024, *, append_eos: bool = False):
    """Train a byte-level BPE tokenizer locally and wrap it for transformers.

    Args:
        seed: drives the training corpus; same seed, same tokenizer.
        vocab_size: target vocabulary size, special tokens included.
        append_eos: add ``</s>`` after each text (CLIP-style text towers pool at it); the
            generator's tokenizer only prepends ``<s>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no <unk> ever
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(seed), trainer=trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    single = "<s> $A </s>" if append_eos else "<s> $A"
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=single + " $B", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )
