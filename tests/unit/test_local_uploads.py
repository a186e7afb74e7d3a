"""The local provider's multipart uploads listed while one of them is aborted (a stream stopping while
the next mount's sweep, or a test, lists them): that upload's record goes between being read and being
dated, which must not fail the listing."""
from __future__ import annotations

import builtins

from storefs.providers import local as local_module
from storefs.providers.local import open_provider

MiB = 1024 * 1024


def test_an_upload_aborted_while_the_uploads_are_listed_is_no_error(tmp_path, monkeypatch):
    provider = open_provider("t", {"root": str(tmp_path / "bucket"), "create_buckets": "yes"})
    provider.check("b")
    store = provider.bucket("b")
    first = store.create_multipart("a", 10 * MiB, 5 * MiB, {})
    second = store.create_multipart("b", 10 * MiB, 5 * MiB, {})
    real_open = builtins.open
    aborted = []

    def open_then_abort(path, *args, **kwargs):
        opened = real_open(path, *args, **kwargs)
        if not aborted and str(path).endswith("upload.json"):
            victim = first if first.upload_id in str(path) else second
            store.abort_multipart(victim)   # gone right after its record was opened
            aborted.append(victim.upload_id)
        return opened
    monkeypatch.setattr(local_module, "open", open_then_abort, raising=False)
    listed = {upload.upload_id for upload in store.list_multipart()}
    monkeypatch.undo()
    assert aborted and {first.upload_id, second.upload_id} - set(aborted) <= listed
    assert {upload.upload_id for upload in store.list_multipart()} == {first.upload_id, second.upload_id} - set(aborted)
