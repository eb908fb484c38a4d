"""Messages and light tables: exceptions shown as clear errors (never a traceback), Markdown tables."""

from __future__ import annotations

import html

import streamlit as st


def show_error(exc: BaseException, what: str = "") -> None:
    """An exception as a clear ``st.error`` (never a traceback)."""
    prefix = f"{what}: " if what else ""
    st.error(f"{prefix}{exc}", icon=":material/error:")


def markdown_table(rows: list[dict], columns: dict[str, str], *, formats: dict[str, str] | None = None,
                   right: tuple[str, ...] = (), center: tuple[str, ...] = ()) -> str:
    """A GitHub-flavoured Markdown table: light to render, where a few rows need no data grid.

    Args:
        rows: one dict per row; a missing key or None shows as an empty cell.
        columns: row key -> column header, in display order.
        formats: row key -> ``str.format`` pattern for its values (a value it cannot format is
            shown as it is).
        right, center: keys of the columns aligned right or centred (others: left).

    Returns:
        The table's Markdown (``|``, line breaks and HTML's ``<``, ``>`` and ``&`` in cells are escaped).
    """
    formats = formats or {}

    def escaped(text: str) -> str:
        return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")

    def cell(key: str, value) -> str:
        if value is None:
            return ""
        text = str(value)
        if key in formats:
            try:
                text = formats[key].format(value)
            except (TypeError, ValueError):
                pass
        return escaped(text)

    align = {key: "---:" if key in right else ":---:" if key in center else "---" for key in columns}
    lines = ["| " + " | ".join(escaped(header) for header in columns.values()) + " |",
             "| " + " | ".join(align[key] for key in columns) + " |"]
    lines += ["| " + " | ".join(cell(key, row.get(key)) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def show_table(rows: list[dict], columns: dict[str, str], **options) -> None:
    """`markdown_table` on the page, in a box that scrolls sideways where the table is wider than the
    page (a phone, a long row of settings) instead of running off the screen. The box is the one piece
    of HTML; every cell's text is escaped by `markdown_table`."""
    table = markdown_table(rows, columns, **options)
    st.markdown(f'<div style="overflow-x: auto">\n\n{table}\n\n</div>', unsafe_allow_html=True)
