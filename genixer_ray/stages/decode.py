"""The decode stage: read each image's bytes and decode them (bad inputs become error rows)."""

from __future__ import annotations

from genixer_ray.config import InputConfig
from genixer_ray.fingerprints import fingerprint
from genixer_ray.images import DecodeError, decode_full, downscale
from genixer_ray.schema import DECODED_SCHEMA
from genixer_ray.stages import fail


class DecodeStage:
    """Read each row's bytes (inline ``data`` or ``source`` through fsspec) and decode them.

    Output rows hold ``pixels`` (RGB bytes), ``height`` and ``width`` (decoded), ``image_width`` and
    ``image_height`` (the original, before any downscale), the image's fingerprints
    (:mod:`genixer_ray.fingerprints`: exact hashes of its bytes and pixels, perceptual hashes), or
    an error row with code
    ``missing``, ``read_failed``, ``empty``, ``not_an_image``, ``truncated`` or ``too_large``.
    Rows already failed at listing (``error_code`` set) become error rows of stage ``input``.
    """

    name = "decode"
    columns = DECODED_SCHEMA  # what its rows hold: the plan's columns and the decoded image

    def __init__(self, cfg: InputConfig):
        self.cfg = cfg

    def read(self, source: str) -> bytes:
        """The bytes of the file at ``source`` (any fsspec URL, with the input's storage options)."""
        import fsspec

        with fsspec.open(source, "rb", **self.cfg.storage_options) as f:
            return f.read()

    def _one(self, row: dict) -> dict:
        data = row.get("data")  # inline bytes are consumed here, not carried further
        if row.get("status") == "skipped":  # left out before it was read (a duplicate image)
            return {k: v for k, v in row.items() if k != "data"}
        row = {k: v for k, v in row.items() if k != "data"} | {"status": "ok"}
        if row.get("error_code"):
            return fail(row, "input", row["error_code"], row.get("error_message") or "")
        try:
            if data is None:
                data = self.read(row["source"])
        except FileNotFoundError:
            return fail(row, self.name, "missing", f"no such file: {row['source']}")
        except Exception as e:  # permissions, network, a directory where a file was expected, ...
            return fail(row, self.name, "read_failed", f"{type(e).__name__}: {e}")
        try:
            full = decode_full(data, max_pixels=self.cfg.max_pixels)
        except DecodeError as e:
            return e.as_row(row, self.name)
        w, h = full.size
        image = downscale(full, max_side=self.cfg.max_side, short_side=self.cfg.short_side, as_array=False)
        return row | fingerprint(data, full).columns() | {
            "pixels": image.tobytes(), "height": image.size[1], "width": image.size[0], "image_width": w, "image_height": h,
        }

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Decode a batch; every failure becomes an error row, the batch never raises for a row."""
        return [self._one(row) for row in batch]
