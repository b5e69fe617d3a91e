"""Engine-side helper answering ``RequestLookup`` actions whose source is ``csv``.

The interpreter never reads files; the engine hands CSV lookups to
:class:`CsvLookup`, which loads each file once (re-reading it when its
modification time changes, so a manager can update the table without a
restart), indexes it by the requested column and answers with a
``LookupCompleted`` event.  The first row whose column equals the key wins.
Store lookups (``source == "store"``) are the engine's own job.
"""
from __future__ import annotations

import csv
import logging
import pathlib

from ivr.actions import RequestLookup
from ivr.events import LookupCompleted

logger = logging.getLogger(__name__)


class CsvLookup:
    """Cached, indexed CSV tables (UTF-8, header row first)."""

    def __init__(self) -> None:
        self._tables: dict[pathlib.Path, tuple[int, list[str], list[dict[str, str]]]] = {}
        self._indexes: dict[tuple[pathlib.Path, str], dict[str, dict[str, str]]] = {}

    def _load(self, path: pathlib.Path) -> tuple[list[str], list[dict[str, str]]]:
        mtime = path.stat().st_mtime_ns
        cached = self._tables.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1], cached[2]
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = [dict(row) for row in reader]
            header = list(reader.fieldnames or [])
        self._tables[path] = (mtime, header, rows)
        for key in [k for k in self._indexes if k[0] == path]:
            del self._indexes[key]
        logger.info("loaded CSV table %s: %d rows", path, len(rows))
        return header, rows

    def lookup(self, request: RequestLookup) -> LookupCompleted:
        """Answer one request; errors become ``LookupCompleted(error=...)``, never exceptions."""
        if request.source != "csv":
            return LookupCompleted(request.request_id, None, f"CsvLookup cannot answer source {request.source!r}")
        path = pathlib.Path(request.table)
        try:
            header, rows = self._load(path)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            return LookupCompleted(request.request_id, None, f"cannot read {path}: {exc}")
        if request.column not in header:
            return LookupCompleted(request.request_id, None, f"{path} has no column {request.column!r}")
        index = self._indexes.get((path, request.column))
        if index is None:
            index = {}
            for each in rows:
                index.setdefault((each.get(request.column) or "").strip(), each)
            self._indexes[(path, request.column)] = index
        found = index.get(request.key.strip())
        return LookupCompleted(request.request_id, dict(found) if found is not None else None)
