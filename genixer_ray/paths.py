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


def is_local_path(ref: str) -> bool:
    """Whether ``ref`` names a file on this machine (a plain path or ``file://``)."""
    return "://" not in ref or ref.startswith("file://")


def escapes_root(path: str, root: str) -> bool:
    """Whether a local ``path`` lands outside the local ``root`` once links are resolved.

    A link inside the root that points outside it escapes; so does ``..``. Remote URLs never do
    here (object stores have no links).
    """
    if not (is_local_path(path) and is_local_path(root)):
        return False
    real = os.path.realpath(path.removeprefix("file://"))
    base = os.path.realpath(root.removeprefix("file://"))
    return os.path.commonpath([real, base]) != base


def printable_name(name: str) -> str:
    """A file name as valid UTF-8 text: undecodable bytes (``surrogateescape``) become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
