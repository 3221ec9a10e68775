"""The page's files: read once (again when they change on disk), served from memory with an ETag.

The files are a few kilobytes; holding them avoids a thread hop per request. A name that
leaves the directory, names a directory or does not exist is simply not found.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

Rewrite = Callable[[bytes], bytes]


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str
    stamp: tuple[int, int]  # (mtime_ns, size) when read


class StaticFiles:
    def __init__(self, directory: Path, rewrites: Mapping[str, Rewrite] | None = None) -> None:
        self.directory = directory.resolve()
        self._rewrites = dict(rewrites or {})
        self._files: dict[str, StaticFile] = {}

    def get(self, name: str) -> StaticFile | None:
        if not name or "\0" in name:
            return None
        path = (self.directory / name).resolve()
        if not path.is_relative_to(self.directory):
            return None
        try:
            info = os.stat(path)
        except (OSError, ValueError):
            return None
        if not path.is_file():
            return None
        key = str(path.relative_to(self.directory))
        stamp = (info.st_mtime_ns, info.st_size)
        cached = self._files.get(key)
        if cached is not None and cached.stamp == stamp:
            return cached
        try:
            body = path.read_bytes()
        except OSError:
            return None
        rewrite = self._rewrites.get(key)
        if rewrite is not None:
            body = rewrite(body)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        loaded = StaticFile(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"', stamp)
        self._files[key] = loaded
        return loaded


def file_response(request: Request, file: StaticFile) -> Response:
    # no-cache: the browser may keep a copy but asks each time; the ETag makes that a 304.
    headers = {"Cache-Control": "no-cache", "ETag": file.etag}
    if file.etag in {tag.strip() for tag in (request.headers.get("if-none-match") or "").split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)
