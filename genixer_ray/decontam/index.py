"""The evaluation sets indexed once per run: their images' fingerprints and their questions.

Images: three tiers, tried in order: the file's bytes (SHA-256), the decoded pixels (XXH3-128), and
the perceptual hashes within a Hamming radius: a run image's ``phash`` against each evaluation
image's and its border crops' (:func:`~genixer_ray.fingerprints.index_hashes`), and its
``phash_center`` against theirs; the nearest wins. With ``decontamination.mirrored`` a fourth,
``mirrored``: the same hashes of each evaluation image flipped left to right (a flip reverses the
sign of half the DCT frequencies pHash keeps; indexed flipped, the flipped copy is as near as any
other edit). With ``decontamination.embedding_model`` a last, ``embedding``: the run image's CLIP image
embedding against every evaluation image's (:meth:`EvalIndex.match_embeddings`, a cosine of at
least ``embedding_threshold``), for copies the hashes cannot see (larger crops, other edits). The
perceptual tier is a multi-index of each kind of hash (:class:`~genixer_ray.hamming.HammingIndex`,
exact within the radius): 64 bytes of hashes per evaluation image plus their positions in the
tables, about 7 microseconds per run image against 100,000 evaluation images where a scan took 0.8
ms (BENCHMARKS.md, "Fingerprints").

Questions (:meth:`EvalIndex.match_text`): a generated question (or a dialogue's turn) that is an
evaluation question once normalized (:func:`normalize_text`: Unicode NFKC, case, punctuation and
spacing) matches with tier ``question``; a text of at least :data:`NGRAM` words that shares a run of
:data:`NGRAM` words with an evaluation question of that length matches with tier ``question_ngram``.
Short questions ("What color is the car?") are asked of every image set, so only their whole text
counts; ten words in a row is what a long question copied with small changes keeps.

The index is built once per run by one Ray task and written to the run's store under
``decontam/index-{digest}.npz`` (``digest``: the fingerprints' version, the sources' settings and
their files' sizes and modification stamps), with its counts in ``decontam/index-{digest}.json``; a re-run with the same
sources reuses it, and each read task loads it once per worker process.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from genixer_ray.config.base import redacted
from genixer_ray.config.decontamination import DecontaminationConfig, EvalSource
from genixer_ray.fingerprints import FINGERPRINT_VERSION, INDEX_CROPS, index_hashes, pixels_digest
from genixer_ray.hamming import HammingIndex
from genixer_ray.images import DecodeError, decode_full

INDEX_FOLDER = "decontam"
NGRAM = 10  # words in a row that a long text shares with an evaluation question to match
_NOT_WORD = re.compile(r"[\W_]+")
_ARRAYS = ("benchmarks", "items", "image_sha256", "pixels_xxh3", "phash", "phash_center", "questions", "question_benchmarks",
           "question_items", "ngrams", "ngram_owner", "phash_mirrored", "phash_center_mirrored", "embeddings", "embedding_model")
EMBED_BATCH = 32  # evaluation images per CLIP forward pass when the index is built
PERCEPTUAL_TIERS = ("perceptual", "mirrored")  # the tiers whose matches have a distance


def normalize_text(text: str) -> str:
    """``text`` compared as a question: NFKC, lower case, every run of non-word characters one space."""
    return " ".join(_NOT_WORD.split(unicodedata.normalize("NFKC", text).lower())).strip()


def ngram_hashes(normalized: str) -> np.ndarray:
    """64-bit hashes of every run of :data:`NGRAM` words of a normalized text (none if shorter)."""
    import xxhash

    words = normalized.split()
    return np.array([xxhash.xxh3_64_intdigest(" ".join(words[i : i + NGRAM]).encode()) for i in range(len(words) - NGRAM + 1)], dtype=np.uint64)


@dataclass(frozen=True)
class Match:
    """A run image that matches an evaluation image: how, how close, and which."""

    tier: str  # "bytes", "pixels", "perceptual", "mirrored", "embedding", "question" or "question_ngram"
    distance: int  # differing bits of the nearer perceptual hash (0 for the other tiers)
    benchmark: str
    item: str
    cosine: float | None = None  # the embedding tier's: the images' embeddings' cosine

    def columns(self) -> dict:
        """The row columns of the match (``contamination_*``)."""
        return {"contamination_tier": self.tier, "contamination_distance": self.distance, "contamination_cosine": self.cosine,
                "contamination_benchmark": self.benchmark, "contamination_item": self.item}

    def how(self) -> str:
        """The tier and how close, in words: ``perceptual, distance 3``, ``embedding, cosine 0.972``
        or ``the same pixels`` (the skip message's and the report's)."""
        if self.tier in PERCEPTUAL_TIERS:
            return f"{self.tier}, distance {self.distance}"
        return f"embedding, cosine {self.cosine:.3f}" if self.tier == "embedding" else f"the same {self.tier}"


@dataclass
class EvalIndex:
    """Fingerprints of evaluation images (one entry per image; ``len(INDEX_CROPS)`` hashes each)."""

    benchmarks: np.ndarray  # str per image
    items: np.ndarray  # str per image
    image_sha256: np.ndarray  # str per image
    pixels_xxh3: np.ndarray  # str per image
    phash: np.ndarray  # uint64, (images, crops)
    phash_center: np.ndarray  # uint64, (images, crops)
    questions: np.ndarray  # str per question, normalized
    question_benchmarks: np.ndarray  # str per question
    question_items: np.ndarray  # str per question
    ngrams: np.ndarray  # uint64 n-gram hashes of the long questions, sorted
    ngram_owner: np.ndarray  # int64: the question each n-gram hash belongs to
    # uint64, (images, crops): the hashes of each image flipped left to right; no rows when not indexed
    phash_mirrored: np.ndarray = field(default_factory=lambda: np.zeros((0, len(INDEX_CROPS)), dtype=np.uint64))
    phash_center_mirrored: np.ndarray = field(default_factory=lambda: np.zeros((0, len(INDEX_CROPS)), dtype=np.uint64))
    # float16, (images, dims): each image's L2-normalized CLIP image embedding; no rows when not indexed
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float16))
    embedding_model: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))  # the open_clip spec, when embedded

    def __post_init__(self):
        self._bytes = {h: i for i, h in enumerate(self.image_sha256)}
        self._pixels = {h: i for i, h in enumerate(self.pixels_xxh3)}
        self._questions = {q: i for i, q in enumerate(self.questions)}
        self._perceptual = [("perceptual", HammingIndex(self.phash), HammingIndex(self.phash_center))]
        if len(self.phash_mirrored):
            self._perceptual.append(("mirrored", HammingIndex(self.phash_mirrored), HammingIndex(self.phash_center_mirrored)))
        self._embeddings = self.embeddings.astype(np.float32)  # once: every batch's product is taken with it

    def __len__(self) -> int:
        return len(self.items)

    def _match(self, i: int, tier: str, distance: int) -> Match:
        return Match(tier, distance, str(self.benchmarks[i]), str(self.items[i]))

    def _exact(self, row: dict) -> Match | None:
        if (i := self._bytes.get(row["image_sha256"])) is not None:
            return self._match(i, "bytes", 0)
        if (i := self._pixels.get(row["pixels_xxh3"])) is not None:
            return self._match(i, "pixels", 0)
        return None

    def match_images(self, rows: list[dict], radius: int) -> list[Match | None]:
        """The evaluation image each row's fingerprints (its columns ``image_sha256``, ...) match, if
        any: the exact tiers first, then the nearest perceptual hash within ``radius`` (a tie: the
        evaluation image indexed first), then, where indexed, the nearest of the flipped images'."""
        found = [self._exact(row) for row in rows]
        for tier, phash, phash_center in self._perceptual:
            rest = [k for k, m in enumerate(found) if m is None]
            full, full_at = phash.nearest(np.array([rows[k]["phash"] for k in rest], dtype=np.uint64), radius)
            center, center_at = phash_center.nearest(np.array([rows[k]["phash_center"] for k in rest], dtype=np.uint64), radius)
            for k, d_full, i_full, d_center, i_center in zip(rest, full, full_at, center, center_at, strict=True):
                distance = min(d_full, d_center)
                if distance <= radius:
                    i = min(i for d, i in ((d_full, i_full), (d_center, i_center)) if d == distance)
                    found[k] = self._match(int(i), tier, int(distance))
        return found

    @property
    def embedded_with(self) -> str | None:
        """The open_clip spec the evaluation images were embedded with, or ``None``."""
        return str(self.embedding_model[0]) if len(self.embedding_model) else None

    def match_embeddings(self, embeddings: np.ndarray, threshold: float) -> list[Match | None]:
        """The evaluation image nearest each L2-normalized embedding (rows of ``embeddings``, made with
        :attr:`embedded_with`) by cosine, where that is at least ``threshold`` (a tie: the one indexed first)."""
        if not len(self.embeddings) or not len(embeddings):
            return [None] * len(embeddings)
        cosines = embeddings.astype(np.float32) @ self._embeddings.T
        best = cosines.argmax(axis=1)
        return [Match("embedding", 0, str(self.benchmarks[i]), str(self.items[i]), round(float(c[i]), 4)) if c[i] >= threshold else None
                for c, i in zip(cosines, best, strict=True)]

    def _question_match(self, i: int, tier: str) -> Match:
        return Match(tier, 0, str(self.question_benchmarks[i]), str(self.question_items[i]))

    def match_text(self, texts: list[str]) -> Match | None:
        """The evaluation question one of ``texts`` (a row's question, a dialogue's turns) repeats, if any."""
        for text in texts:
            norm = normalize_text(text)
            if (i := self._questions.get(norm)) is not None:
                return self._question_match(i, "question")
            grams = ngram_hashes(norm)
            if len(grams) and len(self.ngrams):
                at = np.searchsorted(self.ngrams, grams).clip(max=len(self.ngrams) - 1)
                hit = np.nonzero(self.ngrams[at] == grams)[0]
                if len(hit):
                    return self._question_match(int(self.ngram_owner[at[hit[0]]]), "question_ngram")
        return None

    def to_bytes(self) -> bytes:
        """The index as an ``.npz`` file's bytes (no pickles)."""
        buf = io.BytesIO()
        np.savez(buf, **{k: getattr(self, k) for k in _ARRAYS})
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EvalIndex:
        """The index written by :meth:`to_bytes`."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(**{k: z[k] for k in z.files})


def build_index(cfg: DecontaminationConfig) -> tuple[EvalIndex, dict]:
    """Fingerprint every image of ``cfg.sources`` and gather their questions; return the index and
    its counts per source. An image that does not decode is skipped and counted (its decode code)."""
    from PIL import ImageOps

    from genixer_ray.annotations import SourceStats
    from genixer_ray.decontam.evalsets import iter_eval_records
    from genixer_ray.filters.clip import clip_scorer

    images: dict[str, list] = {k: [] for k in (*_ARRAYS[:6], "phash_mirrored", "phash_center_mirrored")}
    scorer = clip_scorer(cfg.embedding_model) if cfg.embedding_model else None
    tensors, embedded = [], []  # the model's inputs not yet embedded; the embeddings, EMBED_BATCH at a time
    questions: dict[str, tuple[str, str]] = {}  # normalized question -> its first (benchmark, item)
    counts = []
    for src in cfg.sources:
        stats = SourceStats(src.benchmark)
        indexed = 0
        for rec in iter_eval_records(src, stats):
            for q in rec.questions:
                questions.setdefault(normalize_text(q), (src.benchmark, rec.item))
            if rec.data is None:
                continue
            try:
                image = decode_full(rec.data)
            except DecodeError as e:
                stats.skip(e.code, rec.item, e.message)
                continue
            # The exact hashes as the decode stage takes them; the perceptual ones of the image and
            # its border crops (the first pair is what fingerprint() would give: not computed twice).
            hashes = index_hashes(image)
            exact = (hashlib.sha256(rec.data).hexdigest(), pixels_digest(image))
            for k, v in (("benchmarks", src.benchmark), ("items", rec.item), ("image_sha256", exact[0]),
                         ("pixels_xxh3", exact[1]), ("phash", [h for h, _ in hashes]), ("phash_center", [c for _, c in hashes])):
                images[k].append(v)
            if cfg.mirrored:
                flipped = index_hashes(ImageOps.mirror(image))
                images["phash_mirrored"].append([h for h, _ in flipped])
                images["phash_center_mirrored"].append([c for _, c in flipped])
            if scorer is not None:
                tensors.append(scorer.image_tensor(image))
                if len(tensors) == EMBED_BATCH:
                    embedded.append(scorer.embed(tensors).astype(np.float16))
                    tensors = []
            indexed += 1
        counts.append(stats.as_dict() | {"benchmark": src.benchmark, "images": indexed})
    if scorer is not None and tensors:
        embedded.append(scorer.embed(tensors).astype(np.float16))
    shape = (len(images["items"]), len(INDEX_CROPS))
    texts = sorted(q for q in questions if q)
    grams = [(h, i) for i, q in enumerate(texts) for h in ngram_hashes(q).tolist()]
    grams.sort()
    index = EvalIndex(
        benchmarks=np.array(images["benchmarks"], dtype=str), items=np.array(images["items"], dtype=str),
        image_sha256=np.array(images["image_sha256"], dtype=str), pixels_xxh3=np.array(images["pixels_xxh3"], dtype=str),
        phash=np.array(images["phash"], dtype=np.uint64).reshape(shape), phash_center=np.array(images["phash_center"], dtype=np.uint64).reshape(shape),
        phash_mirrored=np.array(images["phash_mirrored"], dtype=np.uint64).reshape(-1, shape[1]),
        phash_center_mirrored=np.array(images["phash_center_mirrored"], dtype=np.uint64).reshape(-1, shape[1]),
        **({"embeddings": np.concatenate(embedded), "embedding_model": np.array([cfg.embedding_model])} if embedded else {}),
        questions=np.array(texts, dtype=str), question_benchmarks=np.array([questions[q][0] for q in texts], dtype=str),
        question_items=np.array([questions[q][1] for q in texts], dtype=str),
        ngrams=np.array([h for h, _ in grams], dtype=np.uint64), ngram_owner=np.array([i for _, i in grams], dtype=np.int64),
    )
    return index, {"sources": counts, "images": len(index), "questions": len(texts)}


def sources_digest(cfg: DecontaminationConfig) -> str:
    """A digest of the fingerprints' version, the sources' settings and their files' sizes and
    modification stamps."""
    import fsspec

    h = hashlib.sha256(json.dumps([FINGERPRINT_VERSION, redacted(cfg)], sort_keys=True).encode())
    for src in cfg.sources:
        for url in _files(src):
            try:
                fs, path = fsspec.core.url_to_fs(url, **src.storage_options)
                info = fs.info(path)
            except (OSError, ValueError):
                info = {}
            stamp = {k: str(info.get(k)) for k in ("size", "mtime", "LastModified", "ETag", "created")}
            h.update(json.dumps([url, stamp], sort_keys=True).encode())
    return h.hexdigest()[:16]


def _files(src: EvalSource) -> list[str]:
    return [u for u in [src.path, *src.files.values()] if u]


def ensure_index(store, cfg: DecontaminationConfig, *, build) -> tuple[str, dict]:
    """The run's index file for ``cfg`` (its name under the run's store) and its counts, built with
    ``build(cfg, store_url, storage_options, name)`` (a Ray task in a run) unless it exists."""
    digest = sources_digest(cfg)
    name = f"{INDEX_FOLDER}/index-{digest}"
    counts = store.read_json(f"{name}.json")
    if counts is None:
        counts = build(cfg, store.url, store.storage_options, name)
    return f"{name}.npz", counts


def build_and_write(cfg: DecontaminationConfig, store_url: str, storage_options: dict, name: str) -> dict:
    """Build the index and write it (``{name}.npz``, then ``{name}.json``, which marks it whole)."""
    from genixer_ray.store import RunStore

    store = RunStore(store_url, storage_options)
    index, counts = build_index(cfg)
    store.write_bytes(f"{name}.npz", index.to_bytes())
    store.write_json(f"{name}.json", counts)
    return counts


def prepare_index(store, cfg: DecontaminationConfig) -> str:
    """The index of ``cfg``'s sources on ``store`` (a run's or a pass's), built by one Ray task
    unless it was built there before; returns its name, and says what it holds in the log."""
    import logging

    from genixer_ray.ray_start import off_driver

    log = logging.getLogger("genixer_ray.decontam")

    def build(*args):
        log.info(f"[decontam] indexing {len(cfg.sources)} evaluation set(s)")
        return off_driver(build_and_write, *args)

    name, counts = ensure_index(store, cfg, build=build)
    per = ", ".join(f"{s['benchmark']} {s['images']}" + (f" ({sum(s['skipped'].values())} skipped)" if s["skipped"] else "")
                    for s in counts["sources"])
    log.info(f"[decontam] {counts['images']} evaluation images and {counts.get('questions', 0)} questions indexed ({per}); "
             f"images within {cfg.radius} bits of one count as theirs")
    return name


@functools.lru_cache(maxsize=4)
def load_index(store_url: str, name: str, options_json: str) -> EvalIndex:
    """This process's copy of the index ``name`` on the run's store (read once per process)."""
    from genixer_ray.store import RunStore

    store = RunStore(store_url, json.loads(options_json))
    return EvalIndex.from_bytes(store.read_bytes(name))
