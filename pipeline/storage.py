"""Where data lives: a local folder (the default) or an object-store URL (``s3://bucket/prefix``).

Object storage is configured by the standard AWS environment variables, read by every
client the pipeline uses (delta-rs, pyarrow, s3fs): ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``) and, for an
S3-compatible server other than AWS, ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs


def is_url(location) -> bool:
    """True for ``scheme://...`` locations other than ``file://``."""
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


def location(value: str | Path) -> str | Path:
    """A URL stays a string (``Path`` would fold ``s3://`` into ``s3:/``); anything else is a Path."""
    return value if is_url(value) else Path(value).expanduser()


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def delta_options(uri: str) -> dict[str, str]:
    """delta-rs storage options for ``uri``.

    On S3, commits are made safe between writers by conditional puts (``If-None-Match``),
    so no external lock (DynamoDB) is needed; an ``http://`` endpoint must be allowed
    explicitly.
    """
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    opts = {"conditional_put": "etag"}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint_url"] = endpoint
        if endpoint.startswith("http://"):
            opts["allow_http"] = "true"
    if _region():
        opts["region"] = _region()
    return opts


def arrow_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, base path inside it) for a local path or an S3 URL."""
    if not is_url(uri):
        path = Path(uri.removeprefix("file://")).absolute()
        return pafs.LocalFileSystem(), path.as_posix()
    scheme, _, rest = uri.partition("://")
    if scheme not in ("s3", "s3a"):
        raise ValueError(f"unsupported storage URL {uri!r}: use a local path or s3://bucket/prefix")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs = {"region": _region()} if _region() else {}
    if endpoint:
        scheme_, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme_, scheme=scheme_ if host else "https")
    return pafs.S3FileSystem(**kwargs), rest.rstrip("/")
