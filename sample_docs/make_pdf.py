"""Write sample_docs/marrow_point_light.pdf by hand, so the sample PDF needs no PDF library to rebuild.

Run `python sample_docs/make_pdf.py`; tests also import `build_pdf` to make small PDFs of their own.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

PAGE_WIDTH, PAGE_HEIGHT = 612, 792  # US Letter, in points
MARGIN = 72
LEADING = 14
WRAP_CHARS = 82  # Helvetica 11 pt averages about 5.5 pt a character: 82 fit in 468 pt
MAX_LINES = (PAGE_HEIGHT - 2 * MARGIN) // LEADING


def _pdf_string(text: str) -> str:
    """A PDF literal string; the text must be Latin-1 because the fonts use WinAnsiEncoding."""
    text.encode("latin-1")
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def _content_stream(lines: Sequence[str]) -> bytes:
    """Text operators for one page: a line starting with '# ' is a bold heading, '' is a blank line."""
    if len(lines) > MAX_LINES:
        raise ValueError(f"{len(lines)} lines do not fit on one page (at most {MAX_LINES})")
    if not lines:  # a page with no text at all, only a grey box: what a scanned page looks like to pypdf
        return b"0.85 g 72 300 468 400 re f\n"
    ops = ["BT", f"/F1 11 Tf {LEADING} TL {MARGIN} {PAGE_HEIGHT - MARGIN} Td"]
    for line in lines:
        if line.startswith("# "):
            ops.append(f"/F2 14 Tf {_pdf_string(line[2:])} Tj T* /F1 11 Tf")
        elif line:
            ops.append(f"{_pdf_string(line)} Tj T*")
        else:
            ops.append("T*")
    ops.append("ET")
    return ("\n".join(ops) + "\n").encode("latin-1")


def build_pdf(pages: Sequence[Sequence[str]], title: str | None = None) -> bytes:
    """A valid PDF 1.4 with one page per item of `pages` (lines of text), Helvetica, and a proper xref."""
    objects: list[bytes] = []  # objects[i] is object number i + 1

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in once the page tree's number is known
    pages_obj = add(b"")
    regular = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    bold = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>")
    kids: list[int] = []
    for lines in pages:
        stream = _content_stream(lines)
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream")
        kids.append(
            add(
                (
                    f"<< /Type /Page /Parent {pages_obj} 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] "
                    f"/Resources << /Font << /F1 {regular} 0 R /F2 {bold} 0 R >> >> /Contents {content} 0 R >>"
                ).encode("latin-1")
            )
        )
    objects[catalog - 1] = f"<< /Type /Catalog /Pages {pages_obj} 0 R >>".encode("latin-1")
    kid_refs = " ".join(f"{k} 0 R" for k in kids)
    objects[pages_obj - 1] = f"<< /Type /Pages /Kids [{kid_refs}] /Count {len(kids)} >>".encode("latin-1")
    info_fields = "/Producer (lectern sample_docs/make_pdf.py)"
    if title:
        info_fields = f"/Title {_pdf_string(title)} " + info_fields
    info = add(f"<< {info_fields} >>".encode("latin-1"))

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\n" % (len(objects) + 1, catalog, info)
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def layout(heading: str, paragraphs: Sequence[str]) -> list[str]:
    """Lines of one page: a bold heading, then paragraphs wrapped to the text width, a blank line apart."""
    lines = ["# " + heading, ""]
    for paragraph in paragraphs:
        lines.extend(textwrap.wrap(paragraph, WRAP_CHARS))
        lines.append("")
    return lines[:-1]


TITLE = "The Marrow Point Light: A Short History"

# Written for lectern (CC0). The light, the people and the events are fictional, so an answer can only
# come from the document, never from a model's memory.
PAGES: list[tuple[str, list[str]]] = [
    (
        "1. A light on Caskell Bay",
        [
            "Marrow Point is a low headland of dark granite at the northern mouth of Caskell Bay. For "
            "centuries the reef that runs out from the point, known to fishermen as the Ribs, claimed "
            "boats that mistook the bay's entrance in fog or at night.",
            "After the loss of three grain ships in the winter of 1847, the merchants of the port of "
            "Hallowby petitioned for a lighthouse. The Marrow Point Light was first lit on the evening of "
            "14 October 1852, and it has shown a light every night since then.",
            "This short history describes how the tower was built, who kept the light, the great storm "
            "of 1903, and how the station became a museum.",
        ],
    ),
    (
        "2. Building the tower",
        [
            "The tower was designed by the engineer Edith Varley, one of the first women to lead a "
            "lighthouse project on the coast. Her design was a tapering round tower, 31 metres tall from "
            "the rock to the gallery, with walls nearly two metres thick at the base.",
            "The stone came from the quarry at Hollin Ridge, eleven miles inland. Each block was cut to "
            "interlock with its neighbours, so that the tower would behave in a gale as a single piece "
            "of rock. Building took four summers, from 1848 to 1851, and cost 11,400 pounds.",
            "The keepers' cottages, a walled garden and an oil store were added in 1852, a few months "
            "before the first lighting.",
        ],
    ),
    (
        "3. The lens and the keepers",
        [
            "At first the light was a ring of oil lamps with polished reflectors. In 1887 they were "
            "replaced by a second-order Fresnel lens made of 212 prisms of glass, which turns on a bath "
            "of mercury. Since 1887 the light has flashed white twice every 15 seconds, and it can be "
            "seen from 22 nautical miles away in clear weather.",
            "The longest-serving keeper was Tobias Wrenfield, who kept the light for 38 years, from 1871 "
            "to 1909. His logbooks, which record the weather at every watch, are kept in the museum.",
            "Three keepers lived at the station with their families. Each night was divided into three "
            "watches, and the keeper on watch wound the clockwork that turned the lens every forty "
            "minutes.",
        ],
    ),
    (
        "4. The storm of 1903",
        [
            "On the night of 9 February 1903 a north-easterly storm drove the schooner Alder Grace onto "
            "the Ribs. Keeper Wrenfield and his daughter Maud rowed out twice in the station's boat "
            "through the surf, and they brought all 17 of the crew ashore alive.",
            "Maud Wrenfield was awarded a silver medal for gallantry. The rudder of the Alder Grace still "
            "hangs on the wall of the oil store.",
        ],
    ),
    (
        "5. Automation and the museum",
        [
            "The light was automated in 1968, and the last keepers left the point that year. An electric "
            "lamp now burns inside the 1887 lens, and the station is monitored from Hallowby.",
            "The keepers' cottages opened as the Marrow Point Museum in 1975. The museum is open every "
            "day except Tuesdays, from April to October. Visitors may climb the 143 steps of the tower "
            "to the gallery on the first Saturday of each month.",
        ],
    ),
]


def main() -> None:
    pdf = build_pdf([layout(heading, paragraphs) for heading, paragraphs in PAGES], title=TITLE)
    target = Path(__file__).with_name("marrow_point_light.pdf")
    target.write_bytes(pdf)
    print(f"wrote {target} ({len(pdf)} bytes, {len(PAGES)} pages)")


if __name__ == "__main__":
    main()
