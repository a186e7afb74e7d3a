"""The `local` provider: a directory acting as an object store. The embedded default, and the fastest
test double.

Layout under `root`:
    root/<bucket>/<key>                 object data; keys are relative paths, so the files are plain files
    root/.storefs-meta/<bucket>/meta/   one JSON sidecar of user metadata per key (named by hash of the key)
    root/.storefs-meta/<bucket>/uploads/<id>/   multipart uploads in progress

Every directory counts as a directory marker (`d/`): a listing reports it, stat("d/") finds it, and
delete("d/") removes it when empty. Keys a directory tree cannot hold (`a//b`, `./x`, `../x`, absolute)
are refused with InvalidArgument, so no key ever escapes `root`.
"""
from __future__ import annotations

import bisect
import collections
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat as stat_mod
import threading
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping

from ..errors import (
    AlreadyExists,
    ConfigError,
    InvalidArgument,
    NotADirectory,
    NotFound,
    PreconditionFailed,
    RemoteChanged,
)
from ..store.registry import ProviderSpec
from ..store.contract import Capabilities, ListPage, MultipartUpload, ObjectInfo, UploadedPart
from ..store.conditions import ConditionalWrites, WriteCondition

log = logging.getLogger(__name__)

SPEC = ProviderSpec(
    type="local",
    required=("root",),
    optional={"create_buckets": "no"},
    doc="A directory acting as a bucket store: each sub-directory of `root` is a bucket. "
        "`create_buckets = yes` creates a missing bucket directory at mount time.",
)

META_DIR = ".storefs-meta"
# Exact: checked and written under a lock every process writing the bucket with a condition takes.
LOCAL_CONDITIONAL_WRITES = ConditionalWrites(absent=True, match=True, absent_multipart=True, match_multipart=True,
                                             how="exact (checked under the bucket's write lock)")
COPY_CHUNK = 4 * 1024 * 1024


def _key_sort(key: str) -> bytes:
    # S3 orders keys by their UTF-8 bytes; Python's str order differs for surrogates only.
    return key.encode("utf-8", "surrogateescape")


def check_key(key: str) -> None:
    """Refuse keys that a directory tree cannot represent or that would leave the bucket."""
    if not key or key.startswith("/") or "\0" in key:
        raise InvalidArgument(f"key {key!r} cannot be stored in a local bucket")
    parts = key[:-1].split("/") if key.endswith("/") else key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidArgument(f"key {key!r} cannot be stored in a local bucket")


class LocalStore:
    """One bucket: a directory."""

    capabilities = Capabilities(min_part_size=5 * 1024 * 1024, single_put_max=16 * 1024 * 1024,
                                server_side_copy=True, server_side_move=True, real_folders=True,
                                resume="list", part_etag="md5", streamed_uploads=True)

    def __init__(self, root: Path, bucket: str) -> None:
        self.name = bucket
        self.base = root / bucket
        self.meta_dir = root / META_DIR / bucket / "meta"
        self.upload_dir = root / META_DIR / bucket / "uploads"
        # Temp files live here, not beside their target: a long name plus a suffix would pass 255 bytes,
        # and a listing would show them. Same filesystem as the bucket, so os.replace stays atomic.
        self.tmp_dir = root / META_DIR / bucket / "tmp"
        # flock()ed by conditional writes: two mounts of one local bucket are two processes.
        self.lock_path = root / META_DIR / bucket / "write.lock"
        self._lock = threading.Lock()
        self._names: collections.OrderedDict = collections.OrderedDict()  # see _sorted_keys

    # -- paths -----------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        check_key(key)
        return self.base / key.rstrip("/")

    def _meta_path(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
        return self.meta_dir / digest[:2] / f"{digest}.json"

    def _tmp_path(self) -> Path:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir / f"{uuid.uuid4().hex}.part"

    def _read_meta(self, key: str) -> dict[str, str]:
        try:
            with open(self._meta_path(key), encoding="utf-8") as f:
                record = json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except (OSError, ValueError) as exc:
            log.warning("unreadable metadata sidecar for %r: %s", key, exc)
            return {}
        return dict(record.get("meta", {})) if record.get("key") == key else {}

    def _write_meta(self, key: str, meta: Mapping[str, str]) -> None:
        path = self._meta_path(key)
        if not meta:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_path()
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"key": key, "meta": dict(meta)}, f)
        os.replace(tmp, path)

    def _info(self, key: str, st: os.stat_result, meta: dict[str, str] | None = None) -> ObjectInfo:
        is_dir = stat_mod.S_ISDIR(st.st_mode)
        size = 0 if is_dir else st.st_size
        etag = "d" if is_dir else f"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}"
        return ObjectInfo(key=key, size=size, etag=etag, mtime=st.st_mtime,
                          meta=self._read_meta(key) if meta is None else meta)

    # -- reads -----------------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(key) from None
        if stat_mod.S_ISDIR(st.st_mode) != key.endswith("/"):
            raise NotFound(key)
        return self._info(key, st)

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if stat_mod.S_ISDIR(st.st_mode):
                    raise NotFound(key)
                if if_match is not None and self._info(key, st, {}).etag != if_match:
                    raise RemoteChanged(key)
                return os.pread(f.fileno(), max(0, end - start), start)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(key) from None

    def list(self, prefix: str, *, delimiter: str = "/", token: str | None = None,
             limit: int | None = None) -> ListPage:
        limit = limit or self.capabilities.list_page_size
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        entries = self._walk_flat(prefix, token) if delimiter else self._walk_deep(prefix, token)
        last: str | None = None
        for key, st in entries:
            if len(objects) + len(prefixes) >= limit:
                return ListPage(objects, prefixes, last)
            last = key
            if delimiter and key.endswith("/") and key != prefix:
                prefixes.append(key)
            else:
                objects.append(self._info(key, st, meta={}))
        return ListPage(objects, prefixes, None)

    def _sorted_keys(self, dir_key: str) -> tuple[list[str], list[bytes]]:
        """The keys of one directory's entries in key order (a directory's key ends in '/'), with their
        sort keys. Read with d_type only (no stat per entry) and kept while the directory is unchanged,
        so that paging through 100,000 entries reads the directory once, not once per page."""
        path = self.base / dir_key if dir_key else self.base
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return [], []
        cache_key = (str(path), st.st_ino, st.st_mtime_ns)
        with self._lock:
            hit = self._names.get(cache_key)
            if hit is not None:
                self._names.move_to_end(cache_key)
                return hit
        keys = []
        try:
            with os.scandir(path) as it:
                for entry in it:
                    try:
                        entry.name.encode("utf-8")
                    except UnicodeEncodeError:
                        log.warning("skipping %r in bucket %s: name is not UTF-8", entry.path, self.name)
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        keys.append(f"{dir_key}{entry.name}/")
                    elif entry.is_file(follow_symlinks=False):
                        keys.append(f"{dir_key}{entry.name}")
        except (FileNotFoundError, NotADirectoryError):
            return [], []
        keys.sort(key=_key_sort)
        result = (keys, [_key_sort(k) for k in keys])
        with self._lock:
            self._names[cache_key] = result
            while len(self._names) > 8:
                self._names.popitem(last=False)
        return result

    def _dir_entries(self, dir_key: str, start: bytes = b"",
                     after: bytes | None = None) -> Iterator[tuple[str, os.stat_result]]:
        """(key, stat) of one directory's entries in key order, from sort key `start` on (and strictly
        after `after`); stat is called only for what the caller consumes."""
        keys, sort_keys = self._sorted_keys(dir_key)
        index = bisect.bisect_left(sort_keys, start)
        if after is not None:
            index = max(index, bisect.bisect_right(sort_keys, after))
        for key in keys[index:]:
            try:
                st = os.stat(self.base / key.rstrip("/"), follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed since the directory was read
            yield key, st

    def _walk_flat(self, prefix: str, token: str | None) -> Iterator[tuple[str, os.stat_result]]:
        dir_key = prefix[: prefix.rfind("/") + 1]
        if dir_key:
            try:
                check_key(dir_key)
            except InvalidArgument:
                return
        after = _key_sort(token) if token else None
        if prefix == dir_key and dir_key:
            # The listed directory's own marker comes first, as an S3 marker object would.
            try:
                st = (self.base / dir_key).stat()
                if stat_mod.S_ISDIR(st.st_mode) and (after is None or _key_sort(dir_key) > after):
                    yield dir_key, st
            except (FileNotFoundError, NotADirectoryError):
                return
        for key, st in self._dir_entries(dir_key, _key_sort(prefix), after):
            if not key.startswith(prefix):
                return  # sorted: past the keys with this prefix
            yield key, st

    def _walk_deep(self, prefix: str, token: str | None) -> Iterator[tuple[str, os.stat_result]]:
        start = prefix[: prefix.rfind("/") + 1]

        def walk(dir_key: str) -> Iterator[tuple[str, os.stat_result]]:
            begin = b""
            if token and token.startswith(dir_key):
                # Everything before the token's own entry at this level was listed on earlier pages.
                begin = _key_sort(dir_key + token[len(dir_key):].split("/", 1)[0])
            for key, st in self._dir_entries(dir_key, begin):
                if not (key.startswith(prefix) or prefix.startswith(key)):
                    continue
                if key.endswith("/"):
                    # Prune whole subtrees that lie before the continuation token.
                    if token and _key_sort(key) < _key_sort(token) and not token.startswith(key):
                        continue
                    if key.startswith(prefix) and (not token or _key_sort(key) > _key_sort(token)):
                        yield key, st
                    yield from walk(key)
                elif not token or _key_sort(key) > _key_sort(token):
                    yield key, st

        if start:
            try:
                check_key(start)
            except InvalidArgument:
                return
        if start and prefix == start and token is None:
            # The listed directory's own marker comes first, as an S3 marker object would (and as in
            # _walk_flat). Without it a directory rename never deleted the old directory's marker, so
            # the old name came back after the negative-cache TTL (tests/fuse/test_hostile.py).
            try:
                st = (self.base / start).stat()
            except (FileNotFoundError, NotADirectoryError):
                return
            if stat_mod.S_ISDIR(st.st_mode):
                yield start, st
        yield from walk(start)

    # -- writes ----------------------------------------------------------------------------------

    def _ensure_parent(self, path: Path, key: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise NotADirectory(f"a parent of {key!r} is a file in this local bucket") from None

    def conditional_writes(self, key: str) -> ConditionalWrites:
        return LOCAL_CONDITIONAL_WRITES

    @contextlib.contextmanager
    def _write_lock(self, condition: WriteCondition | None) -> Iterator[None]:
        """The bucket's write lock, shared with other processes, when there is a condition to check."""
        if condition is None:
            yield
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)   # releases the lock

    def _install(self, tmp: Path, path: Path, key: str, meta: Mapping[str, str],
                 condition: WriteCondition | None) -> os.stat_result:
        """Move a finished temp file to `key`, if `condition` holds (PreconditionFailed if not)."""
        with self._write_lock(condition):
            if condition is not None:
                try:
                    current: str | None = self._info(key, path.stat(), {}).etag
                except (FileNotFoundError, NotADirectoryError):
                    current = None
                if current != condition.etag:
                    raise PreconditionFailed(f"{key!r}: " + ("exists" if condition.absent else
                                                             f"its ETag is {current}, not {condition.etag}"))
            self._write_meta(key, meta)
            os.replace(tmp, path)
            return path.stat()

    def put(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str], *,
            condition: WriteCondition | None = None) -> ObjectInfo:
        path = self._path(key)
        if key.endswith("/"):
            self._ensure_parent(path, key)
            try:
                path.mkdir(exist_ok=True)
            except FileExistsError:
                raise AlreadyExists(f"{key!r}: a file of that name exists") from None
            self._write_meta(key, meta)
            return self.stat(key)
        self._ensure_parent(path, key)
        if path.is_dir():
            raise AlreadyExists(f"{key!r}: a directory of that name exists")
        tmp = self._tmp_path()
        try:
            with open(tmp, "wb") as out:
                remaining = size
                while remaining > 0:
                    chunk = body.read(min(COPY_CHUNK, remaining))
                    if not chunk:
                        raise InvalidArgument(f"{key!r}: body ended {remaining} bytes short")
                    out.write(chunk)
                    remaining -= len(chunk)
            st = self._install(tmp, path, key, meta, condition)
        finally:
            tmp.unlink(missing_ok=True)
        return self._info(key, st, dict(meta))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            if key.endswith("/"):
                path.rmdir()
            else:
                if path.is_dir():
                    return
                path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
            # A marker of a directory that still has children: like S3, the children stay.
        self._meta_path(key).unlink(missing_ok=True)

    def copy(self, src: str, dst: str, meta: Mapping[str, str] | None = None) -> ObjectInfo:
        src_path, dst_path = self._path(src), self._path(dst)
        if src.endswith("/"):
            return self.put(dst, _EMPTY, 0, self._read_meta(src) if meta is None else meta)
        if not src_path.is_file():
            raise NotFound(src)
        self._ensure_parent(dst_path, dst)
        tmp = self._tmp_path()
        try:
            shutil.copyfile(src_path, tmp)
            self._write_meta(dst, self._read_meta(src) if meta is None else meta)
            os.replace(tmp, dst_path)
        finally:
            tmp.unlink(missing_ok=True)
        return self.stat(dst)

    def move(self, src: str, dst: str) -> ObjectInfo:
        src_path, dst_path = self._path(src), self._path(dst)
        if not src_path.exists():
            raise NotFound(src)
        self._ensure_parent(dst_path, dst)
        meta = self._read_meta(src)
        os.replace(src_path, dst_path)
        self._write_meta(dst, meta)
        self._meta_path(src).unlink(missing_ok=True)
        return self.stat(dst)

    def set_meta(self, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        info = self.stat(key)
        self._write_meta(key, meta)
        return ObjectInfo(info.key, info.size, info.etag, info.mtime, dict(meta))

    # -- multipart -------------------------------------------------------------------------------

    def create_multipart(self, key: str, size: int, part_size: int, meta: Mapping[str, str], *,
                         condition: WriteCondition | None = None) -> MultipartUpload:
        check_key(key)
        upload = MultipartUpload(key=key, upload_id=uuid.uuid4().hex,
                                 part_size=max(part_size, self.capabilities.min_part_size))
        folder = self.upload_dir / upload.upload_id
        folder.mkdir(parents=True)
        with open(folder / "upload.json", "w", encoding="utf-8") as f:
            json.dump({"key": key, "meta": dict(meta), "part_size": upload.part_size}, f)
        return upload

    def _upload_folder(self, upload: MultipartUpload) -> Path:
        folder = self.upload_dir / upload.upload_id
        if not (folder / "upload.json").is_file():
            raise NotFound(f"multipart upload {upload.upload_id} of {upload.key!r}")
        return folder

    def upload_part(self, upload: MultipartUpload, number: int, offset: int, data: bytes) -> UploadedPart:
        folder = self._upload_folder(upload)
        tmp = folder / f"{number:05d}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, folder / f"{number:05d}.part")
        return UploadedPart(number=number, etag=hashlib.md5(data).hexdigest(), size=len(data))

    def complete_multipart(self, upload: MultipartUpload, parts: list[UploadedPart], *,
                           condition: WriteCondition | None = None) -> ObjectInfo:
        folder = self._upload_folder(upload)
        with open(folder / "upload.json", encoding="utf-8") as f:
            record = json.load(f)
        numbers = [p.number for p in parts]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            raise InvalidArgument(f"parts of {upload.key!r} out of order")
        files = [folder / f"{n:05d}.part" for n in numbers]
        if not all(f.is_file() for f in files):
            raise InvalidArgument(f"multipart upload of {upload.key!r} is missing parts")
        path = self._path(upload.key)
        self._ensure_parent(path, upload.key)
        tmp = self._tmp_path()
        try:
            with open(tmp, "wb") as out:
                for part in files:
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, out, COPY_CHUNK)
            st = self._install(tmp, path, upload.key, record.get("meta", {}), condition)
        finally:
            tmp.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        return self._info(upload.key, st, dict(record.get("meta", {})))

    def abort_multipart(self, upload: MultipartUpload) -> None:
        shutil.rmtree(self.upload_dir / upload.upload_id, ignore_errors=True)

    def list_parts(self, upload: MultipartUpload) -> list[UploadedPart]:
        """The parts stored so far, each with the MD5 of its bytes as its ETag (as S3 gives)."""
        folder = self._upload_folder(upload)
        parts = []
        for path in sorted(folder.glob("*.part")):
            digest = hashlib.md5()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(COPY_CHUNK), b""):
                    digest.update(chunk)
            parts.append(UploadedPart(number=int(path.name.split(".")[0]), etag=digest.hexdigest(),
                                      size=path.stat().st_size))
        return parts

    def list_multipart(self) -> list[MultipartUpload]:
        uploads = []
        if not self.upload_dir.is_dir():
            return uploads
        for folder in sorted(self.upload_dir.iterdir()):
            try:
                with open(folder / "upload.json", encoding="utf-8") as f:
                    record = json.load(f)
                    started = os.fstat(f.fileno()).st_mtime   # from the file read: an abort may remove it now
            except (OSError, ValueError):
                continue   # completed or aborted meanwhile (or not a whole record)
            uploads.append(MultipartUpload(key=record["key"], upload_id=folder.name,
                                           part_size=int(record.get("part_size", 0)), started=started))
        return uploads


class _Empty:
    def read(self, n: int = -1) -> bytes:
        return b""


_EMPTY = _Empty()


class LocalProvider:
    def __init__(self, remote: str, root: Path, create_buckets: bool) -> None:
        self.remote = remote
        self.root = root
        self.create_buckets = create_buckets

    def check(self, bucket: str | None) -> None:
        if not self.root.is_dir():
            if self.create_buckets:
                self.root.mkdir(parents=True, exist_ok=True)
            else:
                raise NotFound(f"remote {self.remote!r}: root {str(self.root)!r} is not a directory "
                               f"(create it, or fix `root =` in the config)")
        if bucket is None:
            return
        _check_bucket_name(bucket)
        path = self.root / bucket
        if not path.is_dir():
            if self.create_buckets:
                path.mkdir(parents=True, exist_ok=True)
            else:
                raise NotFound(f"remote {self.remote!r} has no bucket {bucket!r} "
                               f"(create the directory {str(path)!r}, or set create_buckets = yes)")

    def list_buckets(self) -> list[str]:
        try:
            return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except FileNotFoundError:
            raise NotFound(f"remote {self.remote!r}: root {str(self.root)!r} does not exist") from None

    def bucket(self, name: str) -> LocalStore:
        _check_bucket_name(name)
        return LocalStore(self.root, name)

    def close(self) -> None:
        pass


def _check_bucket_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or name.startswith("."):
        raise InvalidArgument(f"{name!r} is not a bucket name")


def open_provider(remote: str, options: Mapping[str, str]) -> LocalProvider:
    root = Path(os.path.expanduser(options["root"]))
    if not root.is_absolute():
        raise ConfigError(f"remote {remote!r}: root = {options['root']!r} must be an absolute path")
    create = options.get("create_buckets", "no").strip().lower() in ("1", "yes", "true", "on")
    return LocalProvider(remote, root, create)

