"""MD5 sums of source files compared with the published ones: a mismatch is a WARNING, not an error.

A mismatch is reported (naming the file) rather than refused because re-packed but faithful copies
exist (e.g. ../shared/data/mnist, recovered from a re-encoded copy); the preparers' structure checks
are what reject a broken file.
"""

from __future__ import annotations

import hashlib
import logging
import pathlib

log = logging.getLogger("cnnjax.data.prepare")
_BLOCK = 1 << 20


def md5_of(path: pathlib.Path) -> str:
    """Hex MD5 of a file's bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_md5(path: pathlib.Path, published: str) -> dict[str, str | bool]:
    """Compares `path`'s MD5 with the published one; logs a WARNING naming the file on a mismatch.

    Returns a record for the dataset's metadata: {"file", "md5", "published_md5", "match"}.
    """
    actual = md5_of(path)
    if actual != published:
        log.warning("checksum mismatch: %s has MD5 %s, the published MD5 is %s; preparing it "
                    "anyway (the structure checks still apply)", path, actual, published)
    return {"file": path.name, "md5": actual, "published_md5": published,
            "match": actual == published}
