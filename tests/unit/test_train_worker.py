"""The training worker's parts without Ray Train: the batch (prompt formatted as at generation time,
loss on the target tokens only), the epoch order, and a checkpoint saved then restored."""

import json

from genixer_ray.engines.base import chat_prompt
from genixer_ray.images import embedded_image_paths
from genixer_ray.train_batches import collate


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
    from genixer_ray.train_batches import _options_for, image_options

    sources = [
        DataSource(format="gqa", path="s3://a/q.json", image_root="s3://a/images", storage_options={"key": "one"}),
        DataSource(format="gqa", path="s3://a/q2.json", image_root="s3://a/images/extra/", storage_options={"key": "two"}),
    ]
    roots = image_options(sources)
    assert json.loads(_options_for("s3://a/images/x.jpg", roots)) == {"key": "one"}
    assert json.loads(_options_for("s3://a/images/extra/y.jpg", roots)) == {"key": "two"}  # the nearer root wins
    assert json.loads(_options_for("s3://a/images-other/z.jpg", roots)) == {}  # a prefix of a name is not a folder


def test_epoch_order_is_a_seeded_permutation_per_rank_and_epoch():
    from genixer_ray.train_worker import epoch_order

    a = epoch_order(50, seed=0, rank=0, epoch=0)
    assert sorted(a) == list(range(50)) and a == epoch_order(50, seed=0, rank=0, epoch=0)  # resume replays it
    others = [epoch_order(50, seed=0, rank=1, epoch=0), epoch_order(50, seed=0, rank=0, epoch=1), epoch_order(50, seed=1, rank=0, epoch=0)]
    assert all(o != a for o in others)


def test_a_checkpoint_saved_by_one_worker_is_restored_by_the_next(tiny_models, tmp_path):
    """build_model, one optimizer step, checkpoint on rank 0, then restore and build_model again:
    the same step, the trained weights (not the base ones), the optimizer state, a frozen tower."""
    import torch

    from genixer_ray.config import TrainConfig
    from genixer_ray.train_worker import STATE_FILE, build_model, checkpoint, restore

    cfg = TrainConfig.model_validate({"model": {"base": str(tiny_models.generator)}})
    fresh = restore(cfg, None)
    assert fresh.step == 0 and fresh.optim_state is None and fresh.weights == str(tiny_models.generator)
    processor, model = build_model(cfg, fresh)
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    loss = sum(p.float().pow(2).sum() for p in params)
    loss.backward()
    optimizer.step()
    assert not checkpoint(model, optimizer, processor, step=7, loss=0.5, out=tmp_path, rank=1, fsdp=False, offload=False, final=False)
    assert not (tmp_path / STATE_FILE).exists()  # one copy of the weights: rank 0's
    assert checkpoint(model, optimizer, processor, step=7, loss=0.5, out=tmp_path, rank=0, fsdp=False, offload=False, final=False)
    back = restore(cfg, tmp_path)
    assert back.step == 7 and back.weights == str(tmp_path) and back.optim_state["state"]
    _, again = build_model(cfg, back)
    trained = dict(model.named_parameters())
    for name, p in again.named_parameters():
        assert torch.equal(p, trained[name]), name
