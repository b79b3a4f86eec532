"""Text bound for spreadsheets is neutralised against formula injection (OWASP's rule): a cell
that starts with =, +, -, @, tab or carriage return gets a leading apostrophe, so Excel, LibreOffice
and Google Sheets show it as text instead of running it (=HYPERLINK(...), =cmd|...). Numbers stay
numbers; transcript text that offsets point into is never changed in the tables themselves, only
in CSV and QDA exports meant to be opened by people."""

from __future__ import annotations

import re

import pandas as pd

_TRIGGER = re.compile(r"^[=+\-@\t\r]")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def safe_cell(value):
    if isinstance(value, str) and _TRIGGER.match(value) and not _NUMBER.match(value):
        return "'" + value
    return value


def safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with every text cell neutralised."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(safe_cell)
    return out
