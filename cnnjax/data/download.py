"""`--download`: fetches a standard dataset's original files into the source folder.

Files already there are kept (their MD5 is checked when preparing); each download goes to a
temporary name and is renamed when complete, so an interrupted one leaves no truncated file.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
import urllib.request

from cnnjax.data.catalog import ORIGINALS, download_files

log = logging.getLogger("cnnjax.data.prepare")


def download(name: str, dest: pathlib.Path, base_url: str | None = None) -> list[pathlib.Path]:
    """Downloads dataset `name`'s original files into `dest` (from `base_url`, default the
    catalog's); returns their paths. Raises ValueError for a dataset without originals."""
    if name not in ORIGINALS:
        raise ValueError(f"--download fetches {sorted(ORIGINALS)}; {name!r} has no originals to "
                         f"download (an image folder is already local)")
    base = base_url or ORIGINALS[name].url
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for file in download_files(name):
        path = dest / file
        if not path.is_file():
            partial = path.with_name(path.name + ".part")
            log.info("downloading %s%s to %s", base, file, path)
            try:
                with urllib.request.urlopen(base + file) as response, open(partial, "wb") as out:
                    shutil.copyfileobj(response, out)
            except OSError as e:
                partial.unlink(missing_ok=True)
                raise OSError(f"could not download {base + file}: {e}") from e
            partial.rename(path)
        paths.append(path)
    return paths
