"""Hostile files made at test time: small on disk, whatever they become when read."""

from __future__ import annotations

import zlib
from pathlib import Path

_LINE = b"BT /F1 12 Tf 72 720 Td (" + b"otters eat crayfish at dawn " * 30 + b") Tj ET\n"


def bomb_pdf(path: Path, expanded: int) -> Path:
    """A one-page PDF whose content stream inflates to about `expanded` bytes of text-showing
    operators: 1 GiB is about 3 MB on disk, made in a second (a block deflated once after a full
    flush deflates to the same bytes every time, so it is repeated, not compressed again)."""
    block = _LINE * max(1, (1 << 20) // len(_LINE))
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    count = max(1, expanded // len(block))
    checksum = 1
    for _ in range(count):
        checksum = zlib.adler32(block, checksum)
    stream = b"\x78\xda" + deflated * count + raw.flush() + checksum.to_bytes(4, "big")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return write_pdf(path, objects)


def form_pdf(path: Path, fields: dict[str, str], page_text: str = "") -> Path:
    """A one-page PDF with an AcroForm of text fields filled in (`fields`: name -> value), and
    `page_text` on the page itself (none: a form that is fields only)."""
    content = f"BT /F1 12 Tf 72 720 Td ({page_text}) Tj ET".encode() if page_text else b""
    first_field = 6
    refs = " ".join(f"{first_field + i} 0 R" for i in range(len(fields)))
    objects = [
        f"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [{refs}] >> >>".encode(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Annots [{refs}] "
        "/Resources << /Font << /F1 5 0 R >> >> >>".encode(),
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, (name, value) in enumerate(fields.items()):
        objects.append(
            f"<< /Type /Annot /Subtype /Widget /FT /Tx /T ({name}) /V ({value}) "
            f"/Rect [72 {600 - 30 * i} 400 {620 - 30 * i}] /P 3 0 R >>".encode()
        )
    return write_pdf(path, objects)


def write_pdf(path: Path, objects: list[bytes]) -> Path:
    """A PDF of `objects` (numbered from 1; the first is the catalog) with its cross-reference table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path
