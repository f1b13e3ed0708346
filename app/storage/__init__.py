"""Where frame files live, and safe resolution of their locations.

A location is a path relative to the data root, an absolute path under an allowed root,
a ``file://`` URI, or an ``s3://bucket/key`` URI under an allowed S3 prefix. Resolution
never escapes the allowed roots: ``..``, symlinks pointing out and absolute paths
elsewhere are refused with a :class:`StorageError`.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import unquote, urlparse

from flask import current_app


class StorageError(ValueError):
    """A location that cannot be used: outside the allowed roots, missing or malformed."""


@dataclass(frozen=True)
class LocalLocation:
    path: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


Location = LocalLocation | S3Location


@dataclass(frozen=True)
class Roots:
    data_root: Path
    local: tuple[Path, ...]
    s3: tuple[str, ...]
    s3_endpoint_url: str | None = None

    @classmethod
    def from_config(cls, config: dict | None = None) -> Roots:
        config = config if config is not None else current_app.config
        data_root = Path(config["DATA_ROOT"]).resolve()
        local, s3 = [data_root], []
        for root in config.get("ALLOWED_ROOTS", []):
            if root.startswith("s3://"):
                s3.append(root.rstrip("/") + "/")
            else:
                local.append(Path(root).resolve())
        return cls(data_root, tuple(local), tuple(s3), config.get("S3_ENDPOINT_URL"))


def resolve(location: str, roots: Roots | None = None) -> Location:
    """Turn a stored location into a local path or S3 object, refusing anything outside the roots."""
    roots = roots or Roots.from_config()
    if not isinstance(location, str) or not location.strip():
        raise StorageError("empty file location")
    location = location.strip()
    if "\x00" in location:
        raise StorageError("file location contains a NUL byte")
    if location.startswith("s3://"):
        parsed = urlparse(location)
        key = parsed.path.lstrip("/")
        if not parsed.netloc or not key:
            raise StorageError(f"malformed S3 location {location!r}: expected s3://bucket/key")
        if any(part in ("..", ".") for part in key.split("/")):
            raise StorageError(f"S3 location {location!r} contains '..' or '.' segments")
        full = f"s3://{parsed.netloc}/{key}"
        if not any(full.startswith(prefix) for prefix in roots.s3):
            raise StorageError(f"S3 location {location!r} is outside the allowed roots")
        return S3Location(parsed.netloc, key)
    if "://" in location:
        parsed = urlparse(location)
        if parsed.scheme != "file":
            raise StorageError(f"unsupported location scheme {parsed.scheme!r} in {location!r}")
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"file URI {location!r} names a remote host")
        path = Path(unquote(parsed.path))
    else:
        path = Path(location)
    if not path.is_absolute():
        path = roots.data_root / path
    real = Path(os.path.realpath(path))
    if not any(real == root or real.is_relative_to(root) for root in roots.local):
        raise StorageError(f"file location {location!r} is outside the allowed roots")
    return LocalLocation(real)


def relative_location(path: Path, roots: Roots | None = None) -> str:
    """The location to store for a file under the data root (relative), else its absolute path."""
    roots = roots or Roots.from_config()
    real = Path(os.path.realpath(path))
    if real.is_relative_to(roots.data_root):
        return real.relative_to(roots.data_root).as_posix()
    resolve(str(real), roots)
    return str(real)


def _s3_client(roots: Roots):
    import boto3

    return boto3.client("s3", endpoint_url=roots.s3_endpoint_url)


def exists(location: Location, roots: Roots | None = None) -> bool:
    if isinstance(location, LocalLocation):
        return location.path.is_file()
    from botocore.exceptions import ClientError

    try:
        _s3_client(roots or Roots.from_config()).head_object(Bucket=location.bucket, Key=location.key)
        return True
    except ClientError:
        return False


def open_binary(location: Location, roots: Roots | None = None) -> BinaryIO:
    """A readable binary stream of the file; raises StorageError when it is missing."""
    if isinstance(location, LocalLocation):
        try:
            return open(location.path, "rb")
        except OSError as err:
            raise StorageError(f"cannot read {location.path}: {err.strerror}") from err
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        body = _s3_client(roots or Roots.from_config()).get_object(Bucket=location.bucket, Key=location.key)
    except (ClientError, BotoCoreError) as err:
        raise StorageError(f"cannot read {location}: {err}") from err
    return body["Body"]


def local_copy(location: Location, cache_dir: Path, roots: Roots | None = None) -> Path:
    """A local file with the content (itself when local; an S3 object is fetched once into the cache)."""
    if isinstance(location, LocalLocation):
        if not location.path.is_file():
            raise StorageError(f"file {location.path} does not exist")
        return location.path
    digest = hashlib.sha256(str(location).encode()).hexdigest()[:24]
    target = cache_dir / "s3" / digest / Path(location.key).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open_binary(location, roots) as source, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        shutil.copyfileobj(source, tmp)
    os.replace(tmp.name, target)
    return target


def iter_chunks(stream: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


def checksum(location: Location, roots: Roots | None = None) -> tuple[str, int]:
    """SHA-256 hex digest and size in bytes, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open_binary(location, roots) as stream:
        for chunk in iter_chunks(stream):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size

