#!/usr/bin/env python3
"""Write-if-changed stamp files for the Makefile's dataset targets (standard library only).

Make decides staleness by modification times, and a target that depends on every file of a
377k-image release would make make stat and compare 377k prerequisites on every run. Instead the
Makefile runs this script on every invocation and lets targets depend on the small STAMP file it
maintains. The script computes one SHA-256 over what it was asked to watch and rewrites STAMP
only when that digest changed; an unchanged digest leaves STAMP (and its mtime) alone, so make
sees nothing new and rebuilds nothing.

Two modes:

``listing`` (default, for release folders)
    hashes the resolved folder path and, for every regular file under it (symlinks followed,
    optionally only ``--max-depth`` levels deep), its relative path, size in bytes and
    modification time in nanoseconds. Contents are not read, so the cost is one ``stat`` per
    file. An added, removed, renamed, resized or rewritten file changes the digest; so does
    pointing the Makefile at another release folder.

``content`` (for rules/ and the package sources)
    hashes the relative path and the bytes of every file (optionally only those ending in
    ``--suffix``). Touching a file or checking out the same revision again does not change it;
    editing one does.

Usage::

    stamp.py STAMP PATH [PATH ...] [--content] [--max-depth N] [--suffix .py]
             [--exclude NAME ...] [--what TEXT] [--missing-ok]

Exit status: 0 (stamp current or rewritten), 1 (a PATH does not exist, unless ``--missing-ok``,
or cannot be read: one ``error:`` line), 2 (usage), 130 (Ctrl-C).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


def _walk(root: Path, max_depth: int | None, exclude: frozenset[str]) -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``(relative posix path, stat)`` for every regular file under ``root``, in sorted order.

    Files and folders named in ``exclude`` (any depth) are skipped. ``max_depth`` = 1 lists only the
    files directly in ``root``. Symbolic links are followed (releases are often linked in).
    """
    stack: list[tuple[Path, str, int]] = [(root, "", 1)]
    while stack:
        folder, prefix, depth = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for e in entries:
            if e.name in exclude:
                continue
            rel = prefix + e.name
            try:
                if e.is_dir():
                    if max_depth is None or depth < max_depth:
                        subdirs.append((Path(e.path), rel + "/", depth + 1))
                elif e.is_file():
                    yield rel, e.stat()
            except FileNotFoundError:  # removed while we walk: the next run sees the change
                continue
        stack.extend(reversed(subdirs))


def digest(
    paths: list[Path],
    *,
    content: bool = False,
    max_depth: int | None = None,
    suffix: str | None = None,
    exclude: frozenset[str] = frozenset(),
) -> tuple[str, int]:
    """SHA-256 hex digest of ``paths`` in the chosen mode and the number of files it covered.

    Parameters
    ----------
    paths:
        Files or folders; a missing one hashes as "absent" (the caller decides whether that is
        an error).
    content:
        Hash file bytes (True) or the listing: path, size in bytes, mtime in ns (False).
    max_depth:
        Folder levels to descend (1 = only the files directly inside); None = all.
    suffix:
        Only files found in folders whose name ends with it (e.g. ``.py``); a file named
        directly in ``paths`` always counts. None = all files.
    exclude:
        File or folder names skipped at any depth (not applied to ``paths`` themselves).
    """
    h = hashlib.sha256()
    n = 0
    for p in paths:
        h.update(b"root\0" + str(p.resolve()).encode() + b"\0")
        if not p.exists():  # only with --missing-ok: "absent" is a state of its own
            h.update(b"absent\0")
            continue
        is_file = p.is_file()
        items = [(p.name, p.stat())] if is_file else _walk(p, max_depth, exclude)
        base = p.parent if is_file else p
        for rel, st in items:
            if suffix is not None and not is_file and not rel.endswith(suffix):
                continue
            n += 1
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
            if content:
                h.update(hashlib.sha256((base / rel).read_bytes()).digest())
            else:
                h.update(f"{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest(), n


def update_stamp(stamp: Path, value: str) -> bool:
    """Write ``value`` to ``stamp`` unless it already holds it (atomic replace). True if written."""
    try:
        if stamp.read_text(encoding="utf-8").strip() == value:
            return False
    except FileNotFoundError:
        pass
    stamp.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(value + "\n", encoding="utf-8")
    os.replace(tmp, stamp)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stamp.py", description="Write-if-changed stamp of files or folders.")
    ap.add_argument("stamp", type=Path)
    ap.add_argument("paths", type=Path, nargs="+")
    ap.add_argument("--content", action="store_true", help="hash file bytes instead of path/size/mtime")
    ap.add_argument("--max-depth", type=int, default=None, help="folder levels to descend (1 = top level only)")
    ap.add_argument("--suffix", default=None, help="only files ending with this (e.g. .py)")
    ap.add_argument("--exclude", action="append", default=[], help="file or folder name to skip at any depth (repeatable)")
    ap.add_argument("--what", default=None, help="what the paths are, for messages (e.g. REFLACX_ROOT)")
    ap.add_argument("--missing-ok", action="store_true", help="a missing PATH is a state, not an error")
    args = ap.parse_args(argv)
    if args.max_depth is not None and args.max_depth < 1:
        ap.error("--max-depth must be >= 1")
    for p in args.paths:
        if not p.exists() and not args.missing_ok:
            what = f"{args.what}: " if args.what else ""
            print(f"error: {what}{p}: no such file or folder", file=sys.stderr)
            return 1
    try:
        value, n = digest(
            args.paths,
            content=args.content,
            max_depth=args.max_depth,
            suffix=args.suffix,
            exclude=frozenset(args.exclude),
        )
        first = not args.stamp.exists()
        changed = update_stamp(args.stamp, value)
    except OSError as exc:
        print(f"error: {exc.filename or args.stamp}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if changed:
        paths = " ".join(str(p) for p in args.paths)
        label = f"{args.what} ({paths})" if args.what else paths
        print(f"stamp: {label} {'recorded' if first else 'changed'} ({n} files)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
