"""Streaming a pulled report: the SFTP reader's bounded read-ahead and the incremental CSV parser.
The remote file is an in-memory stand-in for paramiko's SFTPFile (readv, seek, read), the one
collaborator of the function under test; the real server is in tests/integration."""
from __future__ import annotations

import io

import pytest

from connectors import pull
from connectors.pull import RemoteFile, _WindowedReader
from streams.runtime.reports import report_rows


class FakeRemote:
    """The part of paramiko.SFTPFile the reader uses; records each readv's extent."""

    MAX_REQUEST_SIZE = 32768

    def __init__(self, data: bytes):
        self.data, self.pos, self.readv_spans = data, 0, []

    def readv(self, spans):
        self.readv_spans.append(sum(length for _, length in spans))
        for offset, length in spans:
            yield self.data[offset:offset + length]

    def seek(self, offset):
        self.pos = offset

    def read(self, size):
        return self.data[self.pos:self.pos + size]


def read_all(remote: FakeRemote, listed_size: int) -> bytes:
    file = RemoteFile("Report_1.csv", listed_size, 0)
    return io.BufferedReader(_WindowedReader(remote, file), 4096).read()


def test_the_file_is_read_whole_and_never_more_than_a_window_ahead(monkeypatch):
    monkeypatch.setattr(pull, "WINDOW", 100_000)
    data = bytes(range(256)) * 2000  # 512 000 bytes: six windows, the last one short
    remote = FakeRemote(data)
    assert read_all(remote, len(data)) == data
    assert remote.readv_spans == [100_000] * 5 + [12_000]


def test_an_empty_file_reads_as_empty():
    assert read_all(FakeRemote(b""), 0) == b""


@pytest.mark.parametrize("actual, word", [(b"x" * 70_000, "shorter"), (b"x" * 70_001 + b"more", "longer")])
def test_a_file_that_changed_since_the_listing_fails_the_download(actual, word):
    with pytest.raises(Exception, match=rf"download failed: OSError: Report_1.csv is {word} than the 70001 bytes listed"):
        read_all(FakeRemote(actual), 70_001)


def rows_of(data: bytes) -> list:
    return list(report_rows(io.BufferedReader(io.BytesIO(data), 16)))  # tiny buffer: rows span many reads


def test_rows_are_parsed_across_reads_with_quoted_newlines_a_bom_and_blank_lines():
    data = "\ufeffPartner,Note\r\n1,\"two\r\nlines, and a comma\"\r\n\r\n2,é\r\n".encode()
    assert rows_of(data) == [(1, {"Partner": "1", "Note": "two\r\nlines, and a comma"}), (2, {"Partner": "2", "Note": "é"})]


def test_a_row_with_another_cell_count_than_the_header_is_an_error_naming_it():
    with pytest.raises(ValueError, match="row 2 has 3 cells, the header 2"):
        rows_of(b"a,b\r\n1,2\r\n1,2,3\r\n")
