"""COS v4 listings: one folder level per op=list request (context/listover paging), and recursive
listings (delimiter "") as a depth-first walk of the folder tree, one page per request, whose state
rides in the continuation token."""
from __future__ import annotations

import base64
import json
import zlib

from ...errors import InvalidArgument, NotSupported, ProtocolError
from ...store.contract import ListPage, ObjectInfo
from .names import cos_path, decode_name, encode_key
from .wire import CosApi, to_number

LIST_NUM_OLD_MAX = 199  # -165 "单次拉取目录最大支持199" on old servers
WALK_REQUESTS_PER_CALL = 8


def file_etag(sha: object, size: int, mtime: float) -> str:
    """A file's etag: its `sha`, or size and mtime where the server has none."""
    return sha if isinstance(sha, str) and sha else f"{size}-{int(mtime)}"


class CosLister:
    """The listings of one bucket."""

    def __init__(self, api: CosApi, bucket: str) -> None:
        self._api = api
        self._bucket = bucket

    def list(self, prefix: str, delimiter: str, token: str | None, limit: int | None) -> ListPage:
        num = min(limit or self._api.config.list_page_size, self._api.page_cap)
        if delimiter == "/":
            return self._list_level(prefix, token, num)
        if delimiter == "":
            return self._list_walk(prefix, token, num)
        raise NotSupported("COS v4 lists folders: only '/' or '' (recursive) as delimiter")

    def _list_page(self, folder: str, name_prefix: str, context: str, num: int) -> tuple[list, str, bool]:
        """One op=list request: (infos, next context, listover)."""
        list_path = cos_path(folder) + encode_key(name_prefix) if folder else "/" + encode_key(name_prefix)
        what = f"list {folder + name_prefix!r}"
        try:
            data = self._api.call(self._bucket, "GET", list_path, what,
                                  params={"op": "list", "num": str(num), "context": context})
        except InvalidArgument as exc:
            if exc.code not in ("-165", "-170") or num <= LIST_NUM_OLD_MAX:
                raise
            self._api.page_cap = LIST_NUM_OLD_MAX  # an older server: remember its smaller page
            return self._list_page(folder, name_prefix, context, LIST_NUM_OLD_MAX)
        infos = data.get("infos") or []
        listover = data.get("listover")
        next_context = data.get("context") or ""
        if not isinstance(infos, list) or not isinstance(next_context, str):
            raise ProtocolError(f"{what}: malformed listing")
        if isinstance(listover, str):
            listover = listover.lower() in ("true", "1")
        if not listover and not next_context:
            raise ProtocolError(f"{what}: listover is false but no context to continue")
        return infos, next_context, bool(listover)

    @staticmethod
    def _entry(folder: str, info: object) -> tuple[str, ObjectInfo | None]:
        """(key, ObjectInfo) for a file entry, (key ending in '/', None) for a folder entry."""
        if not isinstance(info, dict) or not isinstance(info.get("name"), str) or not info["name"]:
            raise ProtocolError(f"list {folder!r}: entry without a name")
        name = info["name"]
        if name.endswith("/") or "filesize" not in info:
            return folder + decode_name(name.rstrip("/")) + "/", None
        key = folder + decode_name(name)
        size = int(to_number(info.get("filesize"), f"list entry {key}"))
        mtime = to_number(info.get("mtime") or info.get("ctime"), f"list entry {key}", 0.0)
        return key, ObjectInfo(key=key, size=size, etag=file_etag(info.get("sha"), size, mtime), mtime=mtime,
                               meta={}, meta_complete=False)

    def _list_level(self, prefix: str, token: str | None, num: int) -> ListPage:
        cut = prefix.rfind("/") + 1
        folder, name_prefix = prefix[:cut], prefix[cut:]
        infos, context, listover = self._list_page(folder, name_prefix, token or "", num)
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        for info in infos:
            key, obj = self._entry(folder, info)
            if obj is None:
                prefixes.append(key)
            else:
                objects.append(obj)
        return ListPage(objects=objects, prefixes=prefixes, next_token=None if listover else context)

    def _list_walk(self, prefix: str, token: str | None, num: int) -> ListPage:
        """Depth-first walk in name order: a folder's entries come where the folder sorts."""
        if token:
            stack = _decode_walk(token)
        else:
            cut = prefix.rfind("/") + 1
            stack = [{"d": prefix[:cut], "p": prefix[cut:], "c": "", "x": False, "b": []}]
        objects: list[ObjectInfo] = []
        requests_made = 0
        while stack and len(objects) < num:
            top = stack[-1]
            if top["b"]:
                kind, key, size, mtime, etag = top["b"].pop(0)
                if kind == "d":
                    # The folder itself is reported as a `d/` marker, as real folders are objects here;
                    # the layers above need it to carry empty folders along on a directory rename.
                    objects.append(ObjectInfo(key=key, size=0, etag="folder", mtime=0.0, meta={},
                                              meta_complete=False))
                    stack.append({"d": key, "p": "", "c": "", "x": False, "b": []})
                else:
                    objects.append(ObjectInfo(key=key, size=size, etag=etag, mtime=mtime, meta={},
                                              meta_complete=False))
                continue
            if top["x"]:
                stack.pop()
                continue
            if requests_made >= WALK_REQUESTS_PER_CALL:
                break  # bounded work per call; the caller continues with the token
            infos, top["c"], top["x"] = self._list_page(top["d"], top["p"], top["c"], num)
            requests_made += 1
            for info in infos:
                key, obj = self._entry(top["d"], info)
                top["b"].append(["d", key, 0, 0.0, ""] if obj is None else
                                ["f", key, obj.size, obj.mtime, obj.etag])
        return ListPage(objects=objects, prefixes=[], next_token=_encode_walk(stack) if stack else None)


def _encode_walk(stack: list[dict]) -> str:
    raw = json.dumps(stack, separators=(",", ":"), ensure_ascii=False).encode()
    return "w1:" + base64.urlsafe_b64encode(zlib.compress(raw)).decode()


def _decode_walk(token: str) -> list[dict]:
    try:
        if not token.startswith("w1:"):
            raise ValueError("not a walk token")
        stack = json.loads(zlib.decompress(base64.urlsafe_b64decode(token[3:])))
        if not isinstance(stack, list) or not all(isinstance(f, dict) and {"d", "p", "c", "x", "b"} <= set(f)
                                                  for f in stack):
            raise ValueError("bad walk state")
        return stack
    except (ValueError, zlib.error, TypeError) as exc:
        raise InvalidArgument(f"bad continuation token for a recursive listing: {exc}") from None
