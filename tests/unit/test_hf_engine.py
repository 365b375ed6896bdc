"""The transformers backend on the tiny generator and real photos."""

import pytest

from genixer_ray.config import EngineConfig, SamplingConfig
from genixer_ray.engines.base import GenerationRequest, get_generator


@pytest.fixture(scope="module")
def gen(tiny_models):
    return get_generator(EngineConfig(model="tiny", backend="transformers", dtype="float32", max_model_len=256))


def test_batch_shapes(gen, embedded_images, make_requests):
    imgs = list(embedded_images.values())[:5]
    out = gen.generate(make_requests(imgs, max_tokens=12, logprobs=3))
    assert len(out) == 5
    for r in out:
        assert r.error_code is None and r.finish_reason in ("stop", "length")
        assert 1 <= len(r.token_ids) <= 12
        assert len(r.logprobs) == len(r.token_ids) and all(lp <= 0 for lp in r.logprobs)
        assert len(r.top_logprobs) == len(r.token_ids) and all(len(t) == 3 for t in r.top_logprobs)
        assert r.prompt_tokens > gen.model.config.image_seq_length


def test_same_seed_repeats_and_batching_does_not_matter(gen, embedded_images, make_requests):
    imgs = list(embedded_images.values())[:4]
    a = gen.generate(make_requests(imgs, max_tokens=10))
    b = gen.generate(make_requests(imgs, max_tokens=10)[::-1])[::-1]  # other order, other padding
    single = gen.generate(make_requests(imgs, max_tokens=10)[2:3])
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert single[0].token_ids == a[2].token_ids
    other = gen.generate(make_requests(imgs, seed_base=100, max_tokens=10))
    assert [r.token_ids for r in other] != [r.token_ids for r in a]


def test_greedy_ignores_seed(gen, embedded_images, make_requests):
    img = list(embedded_images.values())[0]
    a = gen.generate(make_requests([img], temperature=0.0, max_tokens=8))
    b = gen.generate(make_requests([img], seed_base=7, temperature=0.0, max_tokens=8))
    assert a[0].token_ids == b[0].token_ids
    # Greedy picks the most likely token: its logprob is the top alternative's.
    c = gen.generate(make_requests([img], temperature=0.0, max_tokens=8, logprobs=1))
    assert all(max(t.values()) == pytest.approx(lp, abs=1e-5) for t, lp in zip(c[0].top_logprobs, c[0].logprobs))


def test_over_long_prompt_is_an_error_row_and_others_survive(gen, embedded_images, make_requests):
    img = list(embedded_images.values())[0]
    reqs = make_requests([img, img], max_tokens=6)
    long = GenerationRequest(img, "word " * 400, SamplingConfig(max_tokens=6))
    out = gen.generate([reqs[0], long, reqs[1]])
    assert out[1].error_code == "prompt_too_long" and out[1].finish_reason == "error"
    assert out[0].error_code is None and out[2].error_code is None
    assert out[0].token_ids == gen.generate(reqs[:1])[0].token_ids


def test_engine_is_built_once_per_process(gen):
    assert get_generator(EngineConfig(model="tiny", backend="transformers", dtype="float32", max_model_len=256)) is gen


def test_tiny_top_p_keeps_only_the_most_likely_token(gen, embedded_images, make_requests):
    img = list(embedded_images.values())[1]
    nucleus = gen.generate(make_requests([img], temperature=1.0, top_p=1e-6, max_tokens=8))
    greedy = gen.generate(make_requests([img], temperature=0.0, max_tokens=8))
    assert nucleus[0].token_ids == greedy[0].token_ids
