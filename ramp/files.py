"""Output directories on any filesystem pyarrow reaches (local paths, ``gs://``, ``s3://``, ...)."""

from __future__ import annotations

import os

import pyarrow.fs as pafs


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``path`` (a local path or a URI) and the path within it."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def output_files(directory: str, prefix: str, suffix: str) -> list[str]:
    """Sorted paths of ``<directory>/<prefix>*<suffix>``."""
    fs, root = filesystem(directory)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    names = sorted(i.path for i in infos if i.base_name.startswith(prefix) and i.base_name.endswith(suffix))
    return [f"{directory.rstrip('/')}/{os.path.basename(n)}" for n in names]
