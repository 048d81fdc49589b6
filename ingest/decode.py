"""Bytes to clean text: the encoding told (BOM, UTF-16/32 by their NULs, UTF-8, a declared charset,
detection; binary data refused), for a whole file (`decode_bytes`) or a file read a block at a time
(`stream_encoding`, `decoded`, `cleaned`), and the text cleaned the same way either way (`clean_text`:
newlines, control characters, dot leaders, blank lines)."""

from __future__ import annotations

import codecs
import itertools
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lectern.errors import CorruptDocument, EmptyDocument, EncodingError

_SNIFF_BYTES = 8192


_MAX_CONTROL_SHARE = 0.05  # decoded text with more control characters than this is binary data


# Control characters other than tab and newline become spaces; C1 controls (U+0080-U+009F) too.
_CONTROL_TO_SPACE = {c: " " for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)] if c not in (0x09, 0x0A)}
_CONTROL_TO_SPACE[0x0C] = "\n"  # form feed: a page break in plain text
_CONTROL_TO_SPACE[0x0B] = "\n"  # vertical tab
_CONTROL_TO_SPACE[0xFEFF] = ""  # a stray byte-order mark inside the text


_SPACE_RUN = re.compile(r" {2,}")


# Dot leaders of tables of contents and indexes ("Imports . . . . 3", "Imports......3", "Imports……3"):
# four dots or more, single spaces or tabs between, or two ellipsis characters. Three dots stay
# (an ellipsis, R's `...`). Kept, they filled whole chunks and made those pages match everything.
_DOT_LEADER = re.compile(r"\.(?:[ \t]*\.){3,}|\u2026(?:[ \t]*\u2026)+")


_BLANK_LINES = re.compile(r"\n{3,}")


# A lower-case letter, a hyphen at the end of a line, and a lower-case letter starting the next one: a word
# broken by line wrapping. Upper case or digits after the break ("Jean-\nPaul", "COVID-\n19") stay as they are.
_LINE_END_HYPHEN = re.compile(r"(?<=[a-zß-öø-ÿ])-\n(?=[a-zß-öø-ÿ])")


def read_bytes(path: Path) -> bytes:
    """The file's bytes; an OS error becomes a CorruptDocument that says the OS's reason."""
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise CorruptDocument(path, f"cannot read file: {reason}") from exc


def clean_text(text: str, *, collapse_spaces: bool = True, dehyphenate: bool = False) -> str:
    """Uniform newlines, no control characters, no dot leaders, no trailing spaces and at most one
    blank line in a row.

    Every step is a linear scan, so a multi-megabyte single line costs no more than its length.
    """
    text = clean_newlines(text)
    text = _DOT_LEADER.sub(" ", text)
    if collapse_spaces:
        text = _SPACE_RUN.sub(" ", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    if dehyphenate:
        text = _LINE_END_HYPHEN.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip("\n")


def clean_newlines(text: str) -> str:
    """Newlines as "\\n" (CR LF, CR, form feed, vertical tab), other control characters as spaces."""
    return text.replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROL_TO_SPACE)


def _control_share(text: str) -> float:
    """Share of control characters (other than ordinary whitespace) in a sample of the text."""
    sample = text[:_SNIFF_BYTES]
    if not sample:
        return 0.0
    controls = sum(1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f")
    return controls / len(sample)


def _guess_decode(path: Path, data: bytes) -> str:
    """charset-normalizer's best guess, preferring cp1252 (a superset of Latin-1) among equally good ones.

    On short texts many single-byte code pages score the same; Western European text is the likeliest.
    """
    return data.decode(_guess_encoding(path, data), errors="replace")


def _guess_encoding(path: Path, data: bytes) -> str:
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        raise EncodingError(path, "binary file, not text (no character encoding fits)")
    best = matches[0]
    tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    if any("cp1252" in m.could_be_from_charset for m in tied):
        return "cp1252"
    return best.encoding


def _zero_shares(sample: bytes, width: int) -> list[float]:
    """For each byte position within `width`-byte code units, the share of those bytes that are NUL."""
    units = len(sample) // width
    return [sample[k : units * width : width].count(0) / units for k in range(width)]


def _wide_encoding(data: bytes) -> str | None:
    """UTF-32 or UTF-16 without a byte-order mark, told from binary data by where the NULs fall: text
    in Latin, Greek or Cyrillic script puts them in the high bytes of nearly every code unit, binary
    data anywhere. None when the pattern is not there."""
    sample = data[:_SNIFF_BYTES]
    if len(data) >= 4 and len(data) % 4 == 0:
        z = _zero_shares(sample, 4)
        if z[2] > 0.9 and z[3] > 0.9 and z[0] < 0.1:
            return "utf-32-le"
        if z[0] > 0.9 and z[1] > 0.9 and z[3] < 0.1:
            return "utf-32-be"
    if len(data) >= 2 and len(data) % 2 == 0:
        z = _zero_shares(sample, 2)
        if z[1] > 0.5 and z[0] < 0.1:
            return "utf-16-le"
        if z[0] > 0.5 and z[1] < 0.1:
            return "utf-16-be"
    return None


def decode_bytes(
    path: Path, data: bytes, declared: str | None = None, warnings: list[str] | None = None
) -> str:
    """Text from bytes: BOM, then UTF-16/32 told by their NULs, then UTF-8, then a declared charset
    (HTML meta) unless the bytes contradict it (said in `warnings`), then detection.

    Raises EmptyDocument for no bytes and EncodingError for binary data.
    """
    if not data:
        raise EmptyDocument(path, "file is empty (0 bytes)")
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32")):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    for bom, encoding in ((codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if b"\x00" in data[:_SNIFF_BYTES]:
        wide = _wide_encoding(data)
        if wide is None:
            raise EncodingError(path, "binary file, not text (NUL bytes)")
        try:
            wide_text = data.decode(wide)
        except UnicodeDecodeError as exc:
            raise EncodingError(path, f"binary file, not text (NUL bytes; not valid {wide})") from exc
        if _control_share(wide_text) > _MAX_CONTROL_SHARE:
            raise EncodingError(path, "binary file, not text (too many control characters)")
        return wide_text
    text: str | None = None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if declared:
            try:
                text = data.decode(declared)
            except (LookupError, UnicodeDecodeError):
                text = None
            if text is not None and "charset" not in text[: 2 * _SNIFF_BYTES].lower():
                text = None  # read in its own charset the page loses its own declaration: it is another
            if text is None and warnings is not None:
                warnings.append(
                    f"the page declares charset {declared!r}, which its bytes are not; detected instead"
                )
        if text is None:
            text = _guess_decode(path, data)
    if _control_share(text) > _MAX_CONTROL_SHARE:
        raise EncodingError(path, "binary file, not text (too many control characters)")
    return text


def stream_encoding(path: Path, head: bytes) -> str:
    """The encoding to read a file in a block at a time (a long text file, a CSV), judged from its
    first bytes by decode_bytes's rules: BOM, UTF-16/32 told by their NULs, UTF-8, detection."""
    if not head:
        raise EmptyDocument(path, "file is empty (0 bytes)")
    even = head[: len(head) - len(head) % 4] or head
    boms = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
            (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip
    encoding = next((name for bom, name in boms if head.startswith(bom)), None)
    if encoding is None and b"\x00" in head[:_SNIFF_BYTES]:
        encoding = _wide_encoding(even)
        if encoding is None:
            raise EncodingError(path, "binary file, not text (NUL bytes)")
    if encoding is None:
        try:
            codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
            encoding = "utf-8-sig"
        except UnicodeDecodeError:
            encoding = _guess_encoding(path, head[: 1 << 18])  # detection's memory grows with its sample
    if _control_share(even.decode(encoding, errors="replace")) > _MAX_CONTROL_SHARE:
        raise EncodingError(path, "binary file, not text (too many control characters)")
    return encoding


STREAM_BLOCK = 1 << 20  # bytes read at a time from a streamed text file


def decoded(fh: IO[bytes], encoding: str, warnings: list[str]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    with fh:
        while True:
            block = fh.read(STREAM_BLOCK)
            try:
                yield decoder.decode(block, final=not block)
            except UnicodeDecodeError:  # past the first MiB: not all of it is in that encoding
                decoder.errors = "replace"
                warnings.append(f"bytes past the first MiB are not {encoding}: replaced with U+FFFD")
                yield decoder.decode(block, final=not block)
            if not block:
                return


LONG_LINE = 1 << 22  # a streamed line longer than this is cleaned in parts, cut at a space


def cleaned(blocks: Iterator[str]) -> Iterator[str]:
    """clean_text(text, collapse_spaces=False) of the text the blocks make, as it comes: whole lines
    at a time, with the run of newlines between two pieces carried over."""
    pending, carry, started = "", 0, False
    for block in itertools.chain(blocks, [None]):
        final = block is None
        pending += block or ""
        hold = "\r" if not final and pending.endswith("\r") else ""  # maybe half of a \r\n
        pending = pending[: len(pending) - len(hold)].replace("\r\n", "\n").replace("\r", "\n")
        pending = pending.translate(_CONTROL_TO_SPACE)
        cut = len(pending) if final else pending.rfind("\n") + 1
        if not cut and len(pending) > LONG_LINE:
            cut = max(pending.rfind(" "), 0)
        piece, pending = pending[:cut], pending[cut:] + hold
        text = "\n".join(line.rstrip() for line in _DOT_LEADER.sub(" ", piece).split("\n"))
        body = text.strip("\n")
        if not body:
            carry += len(text)
            continue
        run = carry + len(text) - len(text.lstrip("\n"))
        yield ("\n" * (2 if run >= 3 else run) if started else "") + _BLANK_LINES.sub("\n\n", body)
        carry, started = len(text) - len(text.rstrip("\n")), True
