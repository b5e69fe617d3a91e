"""``ctiengine backup``, ``restore`` and ``audit``: the store's offline tools.

Each reads the config only for ``store.path`` and ``recording.path``
(resolved against the config file's directory) and works on the files
directly; the logic lives in :mod:`engine.backup` and
:mod:`engine.audit_export`.  Exit status as everywhere in the CLI: 0 done,
1 refused or failed (message on stderr), 2 usage or configuration error.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.errors import ConfigError, StoreError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _paths(config_path: str) -> tuple[str, str] | None:
    """``(store path, recordings dir)`` from the config, or None after printing its errors."""
    from engine.config import load_config

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return None
    return cfg.resolve_path(cfg.store.path), cfg.resolve_path(cfg.recording.path)


def cmd_backup(args: argparse.Namespace) -> int:
    from engine.backup import create_backup

    paths = _paths(args.config)
    if paths is None:
        return EXIT_USAGE
    try:
        result = create_backup(paths[0], args.dest, recordings_dir=paths[1],
                               with_recordings=args.with_recordings, full_check=args.full_check)
    except (StoreError, OSError) as exc:
        print(f"backup refused: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    m = result.manifest
    rows = sum(m["tables"].values())
    print(f"{result.path}: schema {m['schema_version']}, {rows} row(s) in {len(m['tables'])} table(s), "
          f"{len(m['recordings'])} media file(s) listed, {m['missing_recordings']} missing"
          + (f", {sum(1 for r in m['recordings'] if r['stored_as'])} copied" if m["with_recordings"] else ""))
    for entry in result.missing_files:
        print(f"warning: {entry['table']} row {entry['id']} (call {entry['call_id']}): file missing: "
              f"{entry['path']}", file=sys.stderr)
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from engine.backup import restore_backup, verify_backup

    paths = _paths(args.config)
    if paths is None:
        return EXIT_USAGE
    try:
        if args.verify_only:
            m = verify_backup(args.src)
            print(f"{args.src}: OK: schema {m['schema_version']}, {len(m['files'])} file(s) verified, "
                  f"created {m.get('created', '?')}")
            return EXIT_OK
        result = restore_backup(args.src, paths[0], recordings_dir=paths[1], force=args.force)
    except (StoreError, OSError) as exc:
        print(f"restore refused: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    migrated = f", migrated to {result.migrated_to[-1]}" if result.migrated_to else ""
    print(f"{result.db_path}: restored from {args.src} (schema {result.schema_version_backup}{migrated}); "
          f"{result.recordings_restored} recording file(s) written, {result.recordings_unchanged} unchanged")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    from engine.audit_export import AuditFilter, export_file

    paths = _paths(args.config)
    if paths is None:
        return EXIT_USAGE
    flt = AuditFilter(since=args.since, until=args.until, user=args.user, op=args.op, tenant=args.tenant)
    try:
        if args.output and args.output != "-":
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                n = export_file(paths[0], out, flt, args.format)
            print(f"{args.output}: {n} audit row(s)", file=sys.stderr)
        else:
            export_file(paths[0], sys.stdout, flt, args.format)
    except (StoreError, OSError) as exc:
        print(f"audit export failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _time_arg(text: str) -> Any:
    from engine.audit_export import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure(sub: argparse._SubParsersAction) -> None:
    """Add ``backup``, ``restore`` and ``audit`` to the ``ctiengine`` parser."""
    p = sub.add_parser("backup", help="consistent online backup of the store (+ recordings manifest)")
    p.add_argument("config")
    p.add_argument("dest", help="new directory, or a file ending in .tar.gz/.tgz")
    p.add_argument("--with-recordings", action="store_true",
                   help="also copy the recording and voicemail files the store lists")
    p.add_argument("--full-check", action="store_true",
                   help="check the copy with PRAGMA integrity_check (indexes too) instead of quick_check")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="verify a backup and restore it into the configured store")
    p.add_argument("config")
    p.add_argument("src", help="backup directory or .tar.gz")
    p.add_argument("--force", action="store_true",
                   help="replace an existing store and differing recording files")
    p.add_argument("--verify-only", action="store_true", help="check the backup's checksums and schema only")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("audit", help="export the audit log as CSV or JSON Lines (reads the store file)")
    p.add_argument("config")
    p.add_argument("--since", type=_time_arg, help="Unix seconds or ISO 8601 (UTC unless a zone is given)")
    p.add_argument("--until", type=_time_arg, help="exclusive end, same forms")
    p.add_argument("--user", default="")
    p.add_argument("--op", default="")
    p.add_argument("--tenant", default="")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_audit)


__all__ = ["configure", "cmd_audit", "cmd_backup", "cmd_restore"]
