"""Streaming, atomic writers of the files the trainer reads.

Token file (include/coat/data/token_file.h), little-endian: bytes 0-7 "COATTOK\\0", 8-11 version 1,
12-15 token width in bytes (2 or 4), 16-19 vocab_size, 20-23 reserved 0, 24-31 token count; then the tokens.
Loss-mask file (notes: loss_mask_format.md): bytes 0-7 "COATMSK\\0", 8-11 version 1, 12-15 reserved 0,
16-23 count; then one byte per token, 0 or 1.

Each writer streams into <path>.tmp; commit() writes the header's count, syncs and renames the file into
place; abort() (or leaving the `with` block by an exception) removes the temporary file, so the final name
holds either its previous file or the complete new one.
"""
import os
import struct
import sys
from array import array

from .errors import DataError

TOKEN_MAGIC = b"COATTOK\0"
MASK_MAGIC = b"COATMSK\0"
FORMAT_VERSION = 1
TOKEN_HEADER = struct.Struct("<8sIIIIQ")   # magic, version, width, vocab_size, reserved, count
MASK_HEADER = struct.Struct("<8sIIQ")      # magic, version, reserved, count


class _AtomicFile:
    def __init__(self, path, header_bytes):
        self.path = path
        self.tmp = path + ".tmp"
        self.count = 0
        try:
            self._file = open(self.tmp, "wb")
        except OSError as e:
            raise DataError(f"{self.tmp}: cannot create it ({e.strerror})") from e
        self._file.write(bytes(header_bytes))  # written for real by finish()

    def _write(self, data):
        try:
            self._file.write(data)
        except OSError as e:
            raise DataError(f"{self.tmp}: write failed ({e.strerror})") from e

    def _header(self):
        raise NotImplementedError

    def finish(self):
        """Writes the header and syncs the temporary file; rename() puts it in place."""
        try:
            self._file.seek(0)
            self._file.write(self._header())
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as e:
            raise DataError(f"{self.tmp}: write failed ({e.strerror})") from e

    def rename(self):
        try:
            os.replace(self.tmp, self.path)
        except OSError as e:
            raise DataError(f"{self.path}: cannot rename it from {self.tmp} ({e.strerror})") from e
        directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def commit(self):
        self.finish()
        self.rename()

    def abort(self):
        if not self._file.closed:
            self._file.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self.abort()
        return False


def pack_tokens(ids, width):
    """Token ids as little-endian bytes of `width` (2 or 4) bytes each."""
    packed = array("H" if width == 2 else "I", ids)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


class TokenFileWriter(_AtomicFile):
    def __init__(self, path, width, vocab_size):
        if width not in (2, 4):
            raise DataError(f"{path}: token width {width} bytes, expected 2 or 4")
        if width == 2 and vocab_size > 65536:
            raise DataError(f"{path}: a vocabulary of {vocab_size} tokens does not fit u16 tokens")
        self.width = width
        self.vocab_size = vocab_size
        super().__init__(path, TOKEN_HEADER.size)

    def append_bytes(self, data):
        """Appends tokens already packed by pack_tokens() with this writer's width."""
        self._write(data)
        self.count += len(data) // self.width

    def append(self, ids):
        self.append_bytes(pack_tokens(ids, self.width))

    def _header(self):
        return TOKEN_HEADER.pack(TOKEN_MAGIC, FORMAT_VERSION, self.width, self.vocab_size, 0, self.count)


class MaskFileWriter(_AtomicFile):
    def __init__(self, path):
        super().__init__(path, MASK_HEADER.size)

    def append(self, mask):
        """Appends mask bytes (each 0 or 1)."""
        self._write(mask)
        self.count += len(mask)

    def _header(self):
        return MASK_HEADER.pack(MASK_MAGIC, FORMAT_VERSION, 0, self.count)
