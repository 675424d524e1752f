"""Readers: every format, lazily, with errors that name the file and line."""

from __future__ import annotations

import pytest

from bertlayers.errors import InputError
from bertlayers.readers import Record, read_records, records_from_texts
from conftest import data_file


def test_txt_one_text_per_line_keeps_empty_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("first\n\n  \nlast with \u2028 inside\r\n".encode())
    records = list(read_records(str(path)))
    assert [r.text for r in records] == ["first", "", "  ", "last with \u2028 inside"]
    assert [r.id for r in records] == ["1", "2", "3", "4"]


def test_tsv_with_quotes_from_shared_data():
    records = list(read_records(str(data_file("sentiment-polarity.tsv"))))
    assert len(records) == 4000
    assert records[0].text.startswith(
        'the rock is destined to be the 21st century\'s new " conan "'
    )
    assert records[0].id == "2"  # line number in the file (line 1 is the header)


def test_jsonl_columns_ids_and_pairs(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": 7, "q": "why?", "a": "because"}\n\n{"id": 8, "q": "how?", "a": "so"}\n')
    records = list(read_records(str(path), text_column="q", pair_column="a", id_column="id"))
    assert records == [Record("7", "why?", "because"), Record("8", "how?", "so")]


def test_csv_multiline_field(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('text,label\n"two\n\nlines",x\n\nplain,y\n')
    records = list(read_records(str(path)))
    assert [r.text for r in records] == ["two\n\nlines", "plain"]
    # a record's id is the line where it starts, blank lines between records counted
    assert [r.id for r in records] == ["2", "6"]


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "message"),
    [
        ("bad.txt", b"fine\nalso fine\nbad \xff byte\n", {}, r"line 3 is not valid UTF-8"),
        ("bad.tsv", b"text\tlabel\nok\t1\n\xc3(\t2\n", {}, r"line 3 is not valid UTF-8"),
        ("empty.txt", b"", {}, r"is empty: no texts"),
        ("empty.csv", b"", {}, r"is empty"),
        ("cols.csv", b"body,label\nx,1\n", {}, r"no column 'text'; columns are: body, label"),
        ("cols.jsonl", b'{"body": "x"}\n', {}, r"line 1: no column 'text'; columns are: body"),
        ("bad.jsonl", b'{"text": "x"}\n{"text": \n', {}, r"line 2 is not valid JSON"),
        ("list.jsonl", b'["x"]\n', {}, r"line 1 is a JSON list, not an object"),
        ("num.jsonl", b'{"text": 5}\n', {}, r"line 1: column 'text' is int, not text"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, name, content, kwargs, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        list(read_records(str(path), **kwargs))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="input file not found"):
        list(read_records(str(tmp_path / "nope.txt")))
    with pytest.raises(InputError, match="is a directory"):
        list(read_records(str(tmp_path)))


def test_records_from_texts_checks_types_and_pairs():
    assert list(records_from_texts(["a", "b"], ["x", "y"]))[1] == Record("1", "b", "y")
    with pytest.raises(InputError, match="text 1 is int"):
        list(records_from_texts(["a", 3]))
    with pytest.raises(InputError, match="fewer pairs than texts"):
        list(records_from_texts(["a", "b"], ["x"]))
    with pytest.raises(InputError, match="more pairs than texts"):
        list(records_from_texts(["a"], ["x", "y"]))
