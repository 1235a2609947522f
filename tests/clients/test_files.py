"""The Files API through the real `openai` client: `files.create` (multipart upload),
`files.list` (cursor pages with limit / order / after / purpose), `files.retrieve`,
`files.content` and `files.delete`, on a server whose files live under its data directory.

The server may hold files of other tests, so each test finds its own by id.
"""
from __future__ import annotations

import io

import openai
import pytest


def test_upload_retrieve_content_list_delete(oa):
    data = b"ferrollama files test\n" + bytes(range(256)) * 300  # ~77 KB, every byte value
    f = oa.files.create(file=("notes.bin", io.BytesIO(data)), purpose="assistants")
    assert f.id.startswith("file-"), f.id
    assert f.object == "file"
    assert f.bytes == len(data)
    assert f.filename == "notes.bin"
    assert f.purpose == "assistants"
    assert f.status == "processed"
    assert f.expires_at is None
    assert f.created_at > 1_700_000_000

    got = oa.files.retrieve(f.id)
    assert (got.id, got.bytes, got.filename, got.created_at) == (f.id, f.bytes, f.filename, f.created_at)

    assert oa.files.content(f.id).read() == data

    listed = [x.id for x in oa.files.list(purpose="assistants")]
    assert f.id in listed

    d = oa.files.delete(f.id)
    assert d.id == f.id and d.deleted is True and d.object == "file"
    with pytest.raises(openai.NotFoundError):
        oa.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        oa.files.content(f.id)
    with pytest.raises(openai.NotFoundError):
        oa.files.delete(f.id)
    assert f.id not in [x.id for x in oa.files.list()]


def test_list_pages_with_limit_order_and_after(oa):
    mine = [
        oa.files.create(file=(f"page{i}.txt", io.BytesIO(f"page {i}".encode())), purpose="vision").id
        for i in range(3)
    ]
    try:
        # One file per page: the client follows `after` = the last id while has_more.
        asc = [x.id for x in oa.files.list(limit=1, order="asc", purpose="vision")]
        assert [i for i in asc if i in mine] == mine
        desc = [x.id for x in oa.files.list(limit=1, order="desc", purpose="vision")]
        assert [i for i in desc if i in mine] == mine[::-1]

        first = oa.files.list(limit=1, order="desc", purpose="vision")
        assert len(first.data) == 1
        assert first.data[0].id == mine[-1]
        assert first.has_more is True
        after = oa.files.list(limit=2, order="desc", purpose="vision", after=mine[-1])
        assert [x.id for x in after.data] == mine[1::-1][:2]
    finally:
        for i in mine:
            oa.files.delete(i)


def test_bad_uploads_are_refused(oa):
    with pytest.raises(openai.BadRequestError) as e:
        oa.files.create(file=("x.txt", io.BytesIO(b"x")), purpose="homework")
    assert "purpose" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        oa.files.list(order="sideways")
    with pytest.raises(openai.BadRequestError):
        oa.files.list(after="file-000000000000000000000000")
