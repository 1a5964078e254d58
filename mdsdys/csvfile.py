"""CSV downloads that a spreadsheet opens as text: no cell can run as a formula (issue 15, item 19)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence

# Excel, LibreOffice and Google Sheets start a formula at any of these (OWASP, "CSV Injection");
# tab and carriage return are included because some importers strip them before looking.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> object:
    """A text value that a spreadsheet would read as a formula, prefixed with ' so it stays text."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(rows: Iterable[Mapping[str, object]], columns: Sequence[str]) -> bytes:
    """Rows as UTF-8 CSV with a header, every text cell neutralised; keys not in `columns` are left out."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: neutralise(value) for key, value in row.items()})
    return buffer.getvalue().encode("utf-8")
