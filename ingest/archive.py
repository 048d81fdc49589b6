"""Zip containers (.docx, .pptx, .xlsx, .epub) checked before any library opens them.

A zip's central directory declares every member's packed and unpacked size; Python's zipfile, which
python-docx, python-pptx, openpyxl and ebooklib all read through, stops a member at its declared
size (a member that unpacks further fails its CRC). So checking the declared sizes bounds what the
libraries can unpack: a zip bomb renamed .docx is refused here, in milliseconds, with its numbers.
An encrypted Office file is not a zip at all but an OLE compound file holding an EncryptedPackage.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from lectern.errors import CorruptDocument, EmptyDocument, EncryptedDocument, TooLarge, UnsupportedFormat

MAX_UNPACKED_BYTES = 512 << 20  # all members together, as declared
MAX_RATIO = 500  # unpacked / packed, for a member over RATIO_FLOOR (XML packs 10-100x; zeros about 1000x)
RATIO_FLOOR = 1 << 20
MAX_MEMBERS = 20_000
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def check_zip(path: Path, kind: str) -> list[str]:
    """The member names of a zip container that is safe to open; raises a DocumentError that says why
    not: empty, encrypted, an older binary format, not a zip, or one that would unpack too far."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(len(_OLE_MAGIC))
    except OSError as exc:
        raise CorruptDocument(path, f"cannot read file: {exc.strerror or type(exc).__name__}") from exc
    if size == 0:
        raise EmptyDocument(path, "file is empty (0 bytes)")
    if head == _OLE_MAGIC:
        if _ole_encrypted(path):
            raise EncryptedDocument(path, f"password-protected {kind} file; save it without a password")
        raise UnsupportedFormat(
            path, f"an older binary Office file, not a {kind} (zip) file: save it in the newer format"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CorruptDocument(path, f"not a readable {kind} file: corrupt, or not a zip ({exc})") from exc
    if len(infos) > MAX_MEMBERS:
        raise TooLarge(path, f"zip with {len(infos):,} members (at most {MAX_MEMBERS:,}): not opened")
    total = sum(i.file_size for i in infos)
    if total > MAX_UNPACKED_BYTES:
        raise TooLarge(
            path, f"unpacks to {_mib(total)} (at most {_mib(MAX_UNPACKED_BYTES)}): a zip bomb? not opened"
        )
    for info in infos:
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise TooLarge(
                path,
                f"member {info.filename!r} unpacks {ratio:,.0f}x ({_mib(info.file_size)}; at most "
                f"{MAX_RATIO}x): a zip bomb? not opened",
            )
        if info.flag_bits & 0x1:
            raise EncryptedDocument(path, f"encrypted zip member {info.filename!r}; remove the password")
    return [i.filename for i in infos]


def _ole_encrypted(path: Path) -> bool:
    """Whether an OLE compound file holds an Office EncryptedPackage (the stream names are UTF-16)."""
    marker = "EncryptedPackage".encode("utf-16-le")
    tail = b""
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                if marker in tail + block:
                    return True
                tail = block[-len(marker) :]
    except OSError:
        return False
    return False
