"""Streaming readers of the inputs, in chunks of entries that worker processes encode.

An entry is (source, line, payload, flags): payload is the raw bytes of one line (modes "lines" and
"jsonl": the worker decodes and parses it, so errors name the file and line) or the text of a document or
of a piece of one (mode "file"); flags say whether the entry starts and/or ends a document (BOS and EOS
go there). A chunk is (entries, input bytes they came from). Files ending in .gz are decompressed.

Mode "file" (one document per file) reads in blocks; a document longer than `piece_chars` is cut into
pieces after a line break between two non-space characters, when the tokenizer encodes such a split
exactly as the whole (HfTokenizer.splits_after_newline), so a large file never has to fit in memory.
"""
import codecs
import gzip
import json
import os
import re

from .errors import DataError

START = 1
END = 2
WHOLE = START | END
BLOCK_BYTES = 1 << 20
MAX_CHUNK_ENTRIES = 4096
_SPLIT_POINT = re.compile(r"\S\n(?=\S)")


def _open(path):
    try:
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot open it ({e.strerror})") from e


def total_bytes(paths):
    """The bytes to read, or None when a compressed input makes it unknown."""
    if any(p.endswith(".gz") for p in paths):
        return None
    try:
        return sum(os.path.getsize(p) for p in paths)
    except OSError as e:
        raise DataError(f"{e.filename}: cannot read it ({e.strerror})") from e


def _line_entries(path):
    """(entry, bytes) for each non-blank line of a file."""
    with _open(path) as f:
        try:
            for line_no, raw in enumerate(f, start=1):
                if raw.strip():
                    yield (path, line_no, raw, WHOLE), len(raw)
                else:
                    yield None, len(raw)
        except OSError as e:  # a damaged .gz, a read error
            raise DataError(f"{path}: read failed ({e})") from e


def _last_split_point(text, start):
    """The position just after the last "x\\ny" line break at or after `start` (-1 when none)."""
    cut = -1
    for match in _SPLIT_POINT.finditer(text, start):
        cut = match.end()
    return cut


def _file_entries(path, piece_chars, errors):
    """The file as one document: (entry, bytes) for the whole text or for its pieces."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    offset, text, searched, started = 0, "", 0, False
    with _open(path) as f:
        while True:
            try:
                block = f.read(BLOCK_BYTES)
                text += decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not UTF-8 at byte {offset + e.start} ({e.reason}); pass "
                                "--encoding-errors replace to read it anyway") from e
            except OSError as e:
                raise DataError(f"{path}: read failed ({e})") from e
            offset += len(block)
            cut = -1
            if piece_chars and len(text) >= piece_chars:
                cut = _last_split_point(text, max(0, searched - 2))
                searched = len(text)
            if cut > 0:
                yield (path, 1, text[:cut], 0 if started else START), len(block)
                started, text, searched = True, text[cut:], searched - cut
            else:
                yield None, len(block)
            if not block:
                break
    if text.strip() or started:
        yield (path, 1, text, END if started else WHOLE), 0


def read_chunks(paths, mode, chunk_bytes, piece_chars=0, errors="strict"):
    """Chunks (entries, input bytes) over all inputs in order; mode "file", "lines" or "jsonl".
    Blank lines and empty files give no entry (their bytes still count)."""
    entries, nbytes = [], 0
    for path in paths:
        source = _file_entries(path, piece_chars, errors) if mode == "file" else _line_entries(path)
        for entry, size in source:
            nbytes += size
            if entry is not None:
                entries.append(entry)
            if entries and (nbytes >= chunk_bytes or len(entries) >= MAX_CHUNK_ENTRIES):
                yield entries, nbytes
                entries, nbytes = [], 0
    if entries or nbytes:
        yield entries, nbytes


def decode_line(source, line, raw, errors="strict"):
    """A line's bytes as text, without its line break."""
    try:
        text = raw.decode("utf-8", errors)
    except UnicodeDecodeError as e:
        raise DataError(f"{source}:{line}: not UTF-8 at byte {e.start} of the line ({e.reason}); pass "
                        "--encoding-errors replace to read it anyway") from e
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return text


def parse_json_line(source, line, text):
    """A JSONL line as a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise DataError(f"{source}:{line}: bad JSON ({e})") from e
    if not isinstance(value, dict):
        raise DataError(f"{source}:{line}: expected a JSON object, got {type(value).__name__}")
    return value
