"""Readers: every format, lazily, with errors that name the file and line."""

from __future__ import annotations

import csv

import pytest

import corpus
from bertlayers.errors import InputError
from bertlayers.io.readers import Record, read_records, records_from_texts


def test_txt_one_text_per_line_keeps_empty_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("first\n\n  \nlast with \u2028 inside\r\n".encode())
    records = list(read_records(str(path)))
    assert [r.text for r in records] == ["first", "", "  ", "last with \u2028 inside"]
    assert [r.id for r in records] == ["1", "2", "3", "4"]


def test_tsv_with_quoted_fields_and_doubled_quotes():
    records = list(read_records(str(corpus.REVIEWS)))
    assert len(records) == 320
    assert records[0].text == (
        "The street party was cancelled at the last minute, and nobody told the bands."
    )
    assert records[0].id == "2"  # line number in the file (line 1 is the header)
    quoted = [r for r in records if r.text.startswith('"Best fish and chips on the coast"')]
    assert len(quoted) == 2  # a field in quotes that starts with doubled ones, read as written
    assert all('""' not in r.text for r in records)


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


# strict csv/tsv: RFC 4180 quoting, the line of every error, never a guess

HINT = "(if the file's quotes are plain characters, read it with quoting='none')"
STRAY_QUOTE_TSV = (
    'label\ttext\npos\t"Great" movie\nneg\t"unbalanced start\nneg\tbad film\npos\tgood film\n'
)


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def _error(path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        list(read_records(path, **kwargs))
    return str(info.value)


def test_stray_quote_in_tsv_is_an_error_not_swallowed_rows(tmp_path):
    path = _write(tmp_path, "q.tsv", STRAY_QUOTE_TSV)
    assert _error(path) == f"{path}: line 2: text after a closing quote {HINT}"
    # with line 2 fixed, the quote opened on line 3 never closes
    path = _write(tmp_path, "u.tsv", STRAY_QUOTE_TSV.replace('"Great" movie', "Great movie"))
    assert _error(path) == f"{path}: line 3: a quote opened here is never closed {HINT}"


def test_quoting_none_reads_quotes_as_characters(tmp_path):
    path = _write(tmp_path, "q.tsv", STRAY_QUOTE_TSV)
    records = list(read_records(path, quoting="none", label_column="label"))
    assert [r.text for r in records] == [
        '"Great" movie',
        '"unbalanced start',
        "bad film",
        "good film",
    ]
    assert [r.id for r in records] == ["2", "3", "4", "5"]
    assert [r.label for r in records] == ["pos", "neg", "neg", "pos"]
    path = _write(tmp_path, "n.csv", 'text,x\n"a,b",1\n')
    assert (
        _error(path, quoting="none") == f"{path}: line 2: expected 2 fields (the header's), saw 3"
    )
    with pytest.raises(ValueError, match="valid quoting modes are: csv, none"):
        list(read_records(path, quoting="excel"))


@pytest.mark.parametrize(
    ("content", "line", "saw"),
    [("id,text\n1,a\n\n3,too,many,fields,here\n", 4, 5), ("id,text\n1,a\n2\n", 3, 1)],
)
def test_wrong_field_count_names_the_line_and_counts(tmp_path, content, line, saw):
    path = _write(tmp_path, "data.csv", content)
    assert (
        _error(path) == f"{path}: line {line}: expected 2 fields (the header's), saw {saw} {HINT}"
    )


def test_unclosed_quote_names_the_line_where_it_opened(tmp_path):
    rows = [f"{i},row {i}" for i in range(2, 101)]
    rows[40] = '42,"an unclosed quote'  # line 42
    path = _write(tmp_path, "big.csv", "id,text\n" + "\n".join(rows) + "\n")
    assert _error(path) == f"{path}: line 42: a quote opened here is never closed {HINT}"


def test_text_after_closing_quote_of_a_multiline_field(tmp_path):
    path = _write(tmp_path, "m.csv", 'id,text\n1,"one\ntwo" three\n')
    assert _error(path) == (
        f"{path}: line 3: text after a closing quote (in a quoted field opened on line 2) {HINT}"
    )


def test_quote_inside_unquoted_field_crlf_and_multiline_ids(tmp_path):
    path = _write(
        tmp_path, "s.csv", 'text,n\r\n5" screen,1\r\n"say ""hi""\r\nthen, go",2\r\n\r\nx,""\r\n'
    )
    records = list(read_records(path))
    assert [r.text for r in records] == ['5" screen', 'say "hi"\r\nthen, go', "x"]
    assert [r.id for r in records] == ["2", "3", "6"]
    path = _write(tmp_path, "r.csv", "text,n\r\na\rb,1\r\n")  # a bare \r is no line end
    assert _error(path) == (
        f"{path}: line 2: a carriage return (\\r) inside an unquoted field;"
        " lines must end with \\n or \\r\\n"
    )


def test_header_is_strict_too(tmp_path):
    assert (
        _error(_write(tmp_path, "b.csv", "\n\r\n\n"))
        == f"{tmp_path / 'b.csv'} is empty: no header row"
    )
    path = _write(tmp_path, "d.tsv", "text\tlabel\ttext\nx\ty\tz\n")
    assert _error(path) == f"{path}: line 1: column 'text' appears twice in the header"
    path = _write(tmp_path, "h.csv", '"text" x,label\na,b\n')
    assert _error(path) == f"{path}: line 1: text after a closing quote {HINT}"
    records = list(
        read_records(_write(tmp_path, "q.csv", '"te,xt",label\n"a",b\n'), text_column="te,xt")
    )
    assert [(r.text, r.id) for r in records] == [("a", "2")]


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_csv_writer_files_parse_as_the_csv_module_reads_them(tmp_path, delimiter):
    rows = [
        ["text", "pair"],
        ['a "quoted" word', "x,y\tz"],
        ["two\nlines", ""],
        ["", 'ends with "'],
        ['"', "cr\r\nlf"],
        ["plain", "row"],
    ]
    path = tmp_path / ("w.csv" if delimiter == "," else "w.tsv")
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file, delimiter=delimiter).writerows(rows)
    records = list(read_records(str(path), pair_column="pair"))
    with path.open(newline="", encoding="utf-8") as file:
        expected = [(row["text"], row["pair"]) for row in csv.DictReader(file, delimiter=delimiter)]
    assert [(r.text, r.pair) for r in records] == expected == [tuple(row) for row in rows[1:]]
    assert [r.id for r in records] == ["2", "3", "5", "6", "8"]


def test_a_quoted_tsv_equals_the_csv_module_reading():
    path = corpus.REVIEWS
    records = list(read_records(str(path), label_column="label"))
    with open(path, newline="", encoding="utf-8") as file:
        expected = [(row["text"], row["label"]) for row in csv.DictReader(file, delimiter="\t")]
    assert len(expected) == 320 and sum('"' in text for text, _ in expected) >= 6
    assert [(r.text, r.label) for r in records] == expected


def test_parquet_and_url_inputs(tmp_path):
    """Parquet files are read by column, ids are row numbers from 1 (or the id column); a
    file:// URL reads as the path does; bad values name the row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bertlayers.io.readers import read_records

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": ["one", "two"], "key": ["k1", "k2"]}), path)
    got = list(read_records(str(path), text_column="body"))
    assert [(r.id, r.text) for r in got] == [("1", "one"), ("2", "two")]
    keyed = list(read_records(f"file://{path}", text_column="body", id_column="key"))
    assert [r.id for r in keyed] == ["k1", "k2"]
    with pytest.raises(InputError, match="no column 'text'; columns are: body, key"):
        list(read_records(str(path)))
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "null.parquet")
    with pytest.raises(InputError, match=r"null\.parquet: row 2: column 'text' is missing"):
        list(read_records(str(tmp_path / "null.parquet")))
    txt = tmp_path / "t.txt"
    txt.write_text("first\nsecond\n")
    assert [r.text for r in read_records(f"file://{txt}")] == ["first", "second"]
    with pytest.raises(InputError, match="cannot read file://"):
        list(read_records(f"file://{tmp_path}/missing.txt"))
