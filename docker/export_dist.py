"""Copy every file an installed distribution owns (per its RECORD) under a prefix, keeping paths.

    python export_dist.py DIST PREFIX

Used by the Dockerfile's build stage: the runtime image adds the project's own files as a small
layer of their own on top of the dependency layer, which stays cached while only sources change.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
from pathlib import Path


def export(dist_name: str, prefix: Path) -> int:
    files = importlib.metadata.distribution(dist_name).files or []
    count = 0
    for entry in files:
        source = Path(str(entry.locate())).resolve()
        if not source.is_file():
            continue  # RECORD may list files pip did not write (e.g. bytecode when compiling is off)
        target = prefix / source.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        count += 1
    if count == 0:
        raise SystemExit(f"export_dist: {dist_name} has no installed files")
    return count


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: export_dist.py DIST PREFIX")
    print(f"exported {export(sys.argv[1], Path(sys.argv[2]))} files of {sys.argv[1]}")
