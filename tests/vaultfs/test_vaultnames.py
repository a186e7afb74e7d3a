"""Archive description → path: mt2/mt1 decoding (mt-aws-glacier's own fixtures), path cleaning,
duplicates, file/directory clashes and nameless archives."""
from __future__ import annotations

import base64
import json

import pytest

from storefs.fs.vault.names import (
    NAME_MAX,
    build_tree,
    clean_path,
    decode_mt,
    encode_mt2,
    id_name,
    name_of,
    parse_mt_time,
    upload_description,
)
from storefs.vaults.base import ArchiveInfo

# (filename, mtime, description) from mt-aws-glacier's t/unit/metadata.t
MT2_FIXTURES = [
    ("file", 1352924178, "mt2 eyJmaWxlbmFtZSI6ImZpbGUiLCJtdGltZSI6IjIwMTIxMTE0VDIwMTYxOFoifQ"),
    ("file/a", 1351924178, "mt2 eyJmaWxlbmFtZSI6ImZpbGUvYSIsIm10aW1lIjoiMjAxMjExMDNUMDYyOTM4WiJ9"),
    ("file/a/b/c/d", 1352124178, "mt2 eyJmaWxlbmFtZSI6ImZpbGUvYS9iL2MvZCIsIm10aW1lIjoiMjAxMjExMDVUMTQwMjU4WiJ9"),
    ("директория/a/b/c/d", 1352124178,
     "mt2 eyJmaWxlbmFtZSI6ItC00LjRgNC10LrRgtC-0YDQuNGPL2EvYi9jL2QiLCJtdGltZSI6IjIwMTIxMTA1VDE0MDI1OFoifQ"),
    ("директория/файл", 1352124178,
     "mt2 eyJmaWxlbmFtZSI6ItC00LjRgNC10LrRgtC-0YDQuNGPL9GE0LDQudC7IiwibXRpbWUiOiIyMDEyMTEwNVQxNDAyNThaIn0"),
]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode().rstrip("=")


def archive(description: str, created: float, archive_id: str | None = None, size: int = 10) -> ArchiveInfo:
    return ArchiveInfo(archive_id or f"id{int(created)}x{abs(hash(description)) % 10000}", description, size,
                       created, None)


@pytest.mark.parametrize("filename,mtime,description", MT2_FIXTURES)
def test_mt2_fixtures_decode(filename, mtime, description):
    assert decode_mt(description) == (filename, float(mtime))


def test_mt2_encoding_is_mt_aws_glaciers():
    # The first fixtures were written with "filename" first: our compact JSON matches byte for byte.
    for filename, mtime, description in MT2_FIXTURES[:2]:
        assert encode_mt2(filename, mtime) == description
    for filename, mtime, _ in MT2_FIXTURES:
        assert decode_mt(encode_mt2(filename, mtime)) == (filename, float(mtime))


def test_mt2_leniency_as_mt_aws_glacier():
    body = _b64('{ "filename": "a", "mtime": "20080102T222324Z"}')
    for description in (f"mt2 {body}==", f"mt2 {body}=", f"mt2   {body}", f"mt2\t\t{body}", f" \tmt2\t\t {body}"):
        assert decode_mt(description) == ("a", 1199312604.0), description
    bad_json = ['ff', '{"a": 1}', '{"x": 1, "mtime": 2}', '{"filename": 7, "mtime": "20080102T222324Z"}']
    for bad in ["zzz", "mt2 zzz", "mt2 !!!!", "mt2 z+z", "mt3 " + body] + ["mt2 " + _b64(j) for j in bad_json]:
        assert decode_mt(bad) is None, bad
    # A name with a broken or missing mtime keeps its name (mt-aws-glacier would drop both).
    broken_time = '{"filename": "f", "mtime": "20081302T222324Z"}'
    assert decode_mt("mt2 " + _b64(broken_time)) == ("f", None)


def test_mt1_double_encoding():
    doc = json.dumps({"filename": "файл", "mtime": "20130101T000000Z"}, ensure_ascii=False).encode("utf-8")
    double = doc.decode("latin-1").encode("utf-8")
    description = "mt1 " + base64.urlsafe_b64encode(double).decode().rstrip("=")
    assert decode_mt(description) == ("файл", 1356998400.0)


@pytest.mark.parametrize("text,expected", [
    ("20121225T100000Z", 1356429600), ("20120229T000000Z", 1330473600), ("20130228T235959Z", 1362095999),
    ("19070809T082454Z", -1969112106), ("19700101T000000Z", 0), ("2013-02-28T00:00:00Z", 1362009600),
    ("20130228 t 235959z", 1362095999), ("2009 01-01T 00:00 00,1234 z", 1230768000),
    ("20081231T235960Z", 1230768000),
])
def test_mt_time(text, expected):
    assert parse_mt_time(text) == expected


@pytest.mark.parametrize("text", ["zzz", "20130230T000000Z", "20131301T000000Z", 1234, None])
def test_mt_time_invalid(text):
    assert parse_mt_time(text) is None


@pytest.mark.parametrize("text,expected", [
    ("a/b.txt", "a/b.txt"), ("/abs/path", "abs/path"), ("./x/./y", "x/y"), ("name with spaces", "name with spaces"),
    ("../etc/passwd", None), ("a/../b", None), ("a//b", None), ("dir/", None), ("", None), ("   ", None),
    ("a\x00b", None), ("line\nbreak", None), ("x" * 256, None), ("x" * 255, "x" * 255), ("id:abc", None),
    ("sub/id:abc", "sub/id:abc"), ("/".join(["d" * 200] * 6), None), ("\ud800", None),
])
def test_clean_path(text, expected):
    assert clean_path(text) == expected


def test_name_of_kinds():
    assert name_of(archive("docs/readme.txt", 5)) == ("docs/readme.txt", None)
    assert name_of(archive(encode_mt2("p/ü.jpg", 1000), 5)) == ("p/ü.jpg", 1000.0)
    assert name_of(archive("mt2 !!!broken", 5)) == (None, None)
    assert name_of(archive("", 5)) == (None, None)
    assert name_of(archive(encode_mt2("../up", 7), 5)) == (None, 7.0)


def test_duplicates_newest_first():
    a1, a2, a3 = archive("f.txt", 100, "A1"), archive("f.txt", 300, "A3"), archive("f.txt", 200, "A2")
    tree = build_tree([a1, a2, a3])
    assert tree.listdir("/") == ["f.txt", "f.txt;2", "f.txt;3"]
    assert tree.file("/f.txt").archive.archive_id == "A3"
    assert tree.file("/f.txt;2").archive.archive_id == "A2"
    assert tree.file("/f.txt;3").archive.archive_id == "A1"


def test_file_and_directory_clash_numbers_every_file():
    tree = build_tree([archive("a", 1, "F1"), archive("a", 2, "F2"), archive("a/b", 3, "B")])
    assert tree.listdir("/") == ["a", "a;1", "a;2"]
    assert tree.is_dir("/a") and tree.listdir("/a") == ["b"]
    assert tree.file("/a;1").archive.archive_id == "F2"  # newest
    assert tree.file("/a;2").archive.archive_id == "F1"


def test_version_name_never_takes_a_real_name():
    tree = build_tree([archive("f", 2, "NEW"), archive("f", 1, "OLD"), archive("f;2", 3, "REAL")])
    assert tree.file("/f;2").archive.archive_id == "REAL"
    assert tree.file("/f").archive.archive_id == "NEW"
    assert tree.file("/id:OLD").archive.archive_id == "OLD"


def test_nameless_and_long_ids():
    long_id = "x" * 300
    odd_id = "a/b"
    tree = build_tree([archive("", 1, "plainid"), archive("../x", 2, long_id), archive("", 3, odd_id)])
    names = tree.listdir("/")
    assert "id:plainid" in names
    assert all(len(n.encode()) <= NAME_MAX and "/" not in n for n in names)
    assert tree.file("/" + id_name(long_id)).archive.archive_id == long_id
    assert tree.file("/" + id_name(odd_id)).archive.archive_id == odd_id
    assert id_name(long_id).startswith("id:~")


def test_too_long_version_name_falls_back_to_id():
    name = "n" * 254
    tree = build_tree([archive(name, 2, "N2"), archive(name, 1, "N1")])
    assert tree.file("/" + name).archive.archive_id == "N2"
    assert tree.file("/id:N1").archive.archive_id == "N1"


def test_tree_dirs_and_mtimes():
    tree = build_tree([archive(encode_mt2("d/e/f", 50), 100, "X"), archive("d/g", 200, "Y")])
    assert tree.listdir("/d") == ["e", "g"]
    assert tree.file("/d/e/f").mtime == 50
    assert tree.dir_mtime["/d"] == 200 and tree.dir_mtime["/d/e"] == 50 and tree.dir_mtime["/"] == 200
    assert [p for p, _ in tree.files_below("/d")] == ["/d/e/f", "/d/g"]
    assert [p for p, _ in tree.files_below("/d/g")] == ["/d/g"]
    assert tree.total_size == 20


def test_upload_description_round_trips():
    description = upload_description("dir/файл.bin", 1700000000)
    assert description is not None and description.startswith("mt2 ")
    assert name_of(ArchiveInfo("I", description, 1, 0.0, None)) == ("dir/файл.bin", 1700000000.0)
    assert description.isascii()
    assert upload_description("../x", 0) is None
    # mt-aws-glacier: 700 ASCII or 350 two-byte characters fit (in components of at most 255 bytes)
    assert upload_description("/".join(["z" * 174] * 4), 0) is not None
    assert upload_description("/".join(["я" * 87] * 4), 0) is not None
    assert upload_description("/".join(["z" * 250] * 4), 0) is None  # over 1024 bytes of description


# ------------------------------------------------------------------------------------------------
# Removing an archive (without_archive) is rebuilding without it, whichever path it takes


def _shape(tree):
    return ({path: node.archive.archive_id for path, node in tree.files.items()},
            {path: sorted(names) for path, names in tree.dirs.items()},
            dict(tree.dir_mtime), dict(tree.by_id), tree.total_size, tree.fallbacks)


@pytest.mark.parametrize("seed", range(40))
def test_removal_equals_a_rebuild(seed):
    import random

    from storefs.fs.vault.names import without_archive

    rng = random.Random(seed)
    # Few names, so that versions, file/directory clashes, literal `;2` names and nameless archives
    # (every case that renames something else) all happen.
    parts = ["a", "b", "a;1", "a;2", "c.txt"]
    archives = []
    for i in range(rng.randint(1, 30)):
        depth = rng.randint(0, 3)
        path = "/".join(rng.choice(parts) for _ in range(depth))
        description = encode_mt2(path, 1_000_000 + rng.randint(0, 50)) if path and rng.random() < 0.5 else path
        archives.append(ArchiveInfo(f"id{i:03d}", description, rng.randint(1, 100), 1_000 + rng.randint(0, 9), None))
    remaining = {a.archive_id: a for a in archives}
    tree = build_tree(archives)
    order = list(remaining)
    rng.shuffle(order)
    for archive_id in order:
        del remaining[archive_id]
        tree = without_archive(tree, archive_id, lambda: list(remaining.values()))
        assert _shape(tree) == _shape(build_tree(remaining.values())), archive_id


def test_removal_in_place_for_distinct_names():
    from storefs.fs.vault.names import without_archive

    archives = [ArchiveInfo(f"id{i}", f"d{i % 3}/f{i}", 10, 1_000.0 + i, None) for i in range(9)]
    tree = build_tree(archives)
    rebuilt = []
    same = without_archive(tree, "id4", lambda: rebuilt.append(1) or archives[:4] + archives[5:])
    assert same is tree and not rebuilt  # the usual case costs no rebuild
    assert "/d1/f4" not in tree.files and tree.dir_mtime["/d1"] == 1_007.0
