"""Local places and relative names: the per-machine home, and names resolved under a root folder."""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def genixer_home() -> Path:
    """Where files built once per machine live: ``$GENIXER_RAY_HOME``, else ``~/.cache/genixer-ray``."""
    return Path(os.environ.get("GENIXER_RAY_HOME") or Path.home() / ".cache" / "genixer-ray")


def build_once(final: Path, build: Callable[[Path], object]) -> Path:
    """``final``, made by ``build(tmp_dir)`` the first time: built aside, then renamed into place.

    The rename is atomic, so concurrent builders (test workers, Ray actors) never see a half-built
    folder; the one that finishes second drops its copy.
    """
    if not final.is_dir():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
        try:
            build(tmp)
            os.rename(tmp, final)  # fails if another process finished first
        except OSError:
            if not final.is_dir():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_under_root(ref: str, root: str) -> str | None:
    """Resolve a manifest path: URLs and absolute paths stay; relative ones join ``root``.

    Returns ``None`` when a relative path climbs out of ``root`` (``../secret``).
    """
    if "://" in ref or ref.startswith("/"):
        return ref
    norm = posixpath.normpath(ref)
    if norm == ".." or norm.startswith("../"):
        return None
    return f"{root.rstrip('/')}/{norm}"
