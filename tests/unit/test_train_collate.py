"""The training batch: prompt formatted as at generation time, loss on the target tokens only."""

import json

from genixer_ray.engines.base import chat_prompt
from genixer_ray.images import embedded_image_paths
from genixer_ray.train_worker import collate


def test_labels_cover_exactly_the_target(tiny_models):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_models.generator)
    paths = list(embedded_image_paths().values())
    rows = [
        {"image": str(paths[0]), "instruction": "Ask something.", "target": "Question: What is it? Answer: a cat"},
        {"image": str(paths[1]), "instruction": "Ask about the picture in more words.", "target": "Question: Color? Answer: red"},
    ]
    batch = collate(proc, rows, max_side=128)
    for i, r in enumerate(rows):
        ids = batch["input_ids"][i]
        labels = batch["labels"][i]
        kept = ids[labels != -100].tolist()
        assert proc.tokenizer.decode(kept) == f" {r['target']}</s>"
        context = proc.tokenizer.decode(ids[labels == -100].tolist()).replace("<pad>", "")
        # The prompt as generation formats it, with the image placeholder expanded to its tokens.
        n_image_tokens = (56 // 14) ** 2  # patches of the tiny vision tower
        expected = chat_prompt(proc, r["instruction"]).replace("<image>", "<image>" * n_image_tokens)
        assert context == f"<s>{expected}"


def test_each_image_is_read_with_its_sources_credentials():
    from genixer_ray.config import DataSource
    from genixer_ray.train_worker import _options_for, image_options

    sources = [
        DataSource(format="gqa", path="s3://a/q.json", image_root="s3://a/images", storage_options={"key": "one"}),
        DataSource(format="gqa", path="s3://a/q2.json", image_root="s3://a/images/extra/", storage_options={"key": "two"}),
    ]
    roots = image_options(sources)
    assert json.loads(_options_for("s3://a/images/x.jpg", roots)) == {"key": "one"}
    assert json.loads(_options_for("s3://a/images/extra/y.jpg", roots)) == {"key": "two"}  # the nearer root wins
    assert json.loads(_options_for("s3://a/images-other/z.jpg", roots)) == {}  # a prefix of a name is not a folder
