"""Pure pieces of resumable uploads: S3's ListParts and ListMultipartUploads documents, the part
check against local bytes, and the journal's upload record and ledger."""
from __future__ import annotations

import hashlib
import os

import pytest

from storefs.errors import ProtocolError
from storefs.fs.bucket.journal import Journal, JournalEntry
from storefs.fs.bucket.resume import UploadRecord
from storefs.providers.s3.xml import parse_list_parts, parse_list_uploads
from storefs.store.partcheck import local_part_etag, part_matches
from storefs.wire.auth.ufile import etag_of

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def test_list_parts_pages_and_quoted_etags():
    body = (f'<ListPartsResult {NS}><Bucket>b</Bucket><Key>k</Key><UploadId>u</UploadId>'
            '<PartNumberMarker>0</PartNumberMarker><NextPartNumberMarker>2</NextPartNumberMarker>'
            '<MaxParts>2</MaxParts><IsTruncated>true</IsTruncated>'
            '<Part><PartNumber>1</PartNumber><LastModified>2010-11-10T20:48:34.000Z</LastModified>'
            '<ETag>"7778aef83f66abc1fa1e8477f296d394"</ETag><Size>10485760</Size></Part>'
            '<Part><PartNumber>2</PartNumber><ETag>&quot;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&quot;</ETag>'
            '<Size>5</Size></Part></ListPartsResult>').encode()
    parts, marker = parse_list_parts(body, "list parts")
    assert [(p.number, p.etag, p.size) for p in parts] == [
        (1, "7778aef83f66abc1fa1e8477f296d394", 10485760), (2, "a" * 32, 5)]
    assert marker == "2"
    last = body.replace(b"<IsTruncated>true", b"<IsTruncated>false")
    assert parse_list_parts(last, "list parts")[1] is None
    with pytest.raises(ProtocolError):
        parse_list_parts(body.replace(b"<NextPartNumberMarker>2</NextPartNumberMarker>", b""), "list parts")
    with pytest.raises(ProtocolError):
        parse_list_parts(b"<ListBucketResult/>", "list parts")


def test_list_uploads_carry_their_initiation_time():
    body = (f'<ListMultipartUploadsResult {NS}><Bucket>b</Bucket><IsTruncated>false</IsTruncated>'
            '<Upload><Key>a%2Fb</Key><UploadId>u1</UploadId><Initiated>2026-12-07T01:02:03.000Z</Initiated></Upload>'
            '<Upload><Key>c</Key><UploadId>u2</UploadId></Upload>'
            '<EncodingType>url</EncodingType></ListMultipartUploadsResult>').encode()
    uploads, markers = parse_list_uploads(body, 8 << 20)
    assert [(u.key, u.upload_id) for u in uploads] == [("a/b", "u1"), ("c", "u2")] and markers == []
    assert uploads[0].started == 1796605323.0 and uploads[1].started is None


def test_part_check_accepts_only_the_hash_of_these_bytes():
    data = os.urandom(5 * 1024 * 1024 + 3)
    md5 = hashlib.md5(data).hexdigest()
    assert part_matches("md5", f'"{md5.upper()}"', data)
    assert not part_matches("md5", md5, data[:-1] + b"x")
    assert not part_matches("md5", md5 + "-2", data)        # a multipart-style ETag is no part MD5
    assert part_matches("ufile", etag_of(data), data)
    assert not part_matches("ufile", etag_of(data[1:]), data)
    assert not part_matches("ufile", md5, data)
    # An ETag of unknown form is never trusted.
    assert local_part_etag("", data) is None and not part_matches("", md5, data)
    assert not part_matches("md5", "", data)


def test_the_upload_record_rides_in_the_journal_entry(tmp_path):
    journal = Journal(tmp_path)
    (tmp_path / ("c" * 32)).write_bytes(b"x")
    record = UploadRecord(upload_id="u-1", key="k", part_size=8, size=1, mtime_ns=5, token="t",
                          state={"meta": {"mtime": "1"}}, parts=[[1, "ctx", 1, "md5"]])
    journal.write(JournalEntry(id="c" * 32, path="/k", key="k", meta={}, base_etag=None, upload=record.to_json()))
    (loaded,) = Journal(tmp_path).load()
    again = UploadRecord.from_json(loaded.upload)
    assert again == record
    assert again.same_file("k", 1, 5) and not again.same_file("k", 2, 5) and not again.same_file("k", 1, 6)
    assert not again.same_file("other", 1, 5)
    assert again.upload().upload_id == "u-1" and again.upload().state == {"meta": {"mtime": "1"}}


def test_the_ledger_survives_a_reload_and_ignores_garbage(tmp_path, caplog):
    journal = Journal(tmp_path)
    token = journal.ledger_write(None, "a/b")
    journal.ledger_write("up-2", "a/b", token=token)      # the same record, now with its id
    other = journal.ledger_write("up-3", "d")
    (tmp_path / "uploads" / "junk.json").write_text("{not json")
    records = Journal(tmp_path).ledger_load()
    assert sorted((r["key"], r["upload_id"]) for r in records) == [("a/b", "up-2"), ("d", "up-3")]
    assert "unreadable upload ledger record" in caplog.text
    journal.ledger_remove(other)
    journal.ledger_remove("no-such-token")
    assert [r["upload_id"] for r in journal.ledger_load()] == ["up-2"]
