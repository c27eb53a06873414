"""How much memory a container uses: the proportional set size (PSS) of its process tree.

Summing RSS over a prefork worker counts every page the children share with their parent once per
child, so a Celery master with 4 children that share 60 MB copy-on-write would "use" 300 MB. PSS
splits each shared page among the processes that map it, so the sum over the tree counts every
page once, which is close to what a memory cgroup charges. The tree is the main process and all its
descendants (children that were recycled are gone from it the moment they exit).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_UNITS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def parse_quantity(text: str) -> int:
    """Bytes of a Kubernetes memory quantity such as `64Mi`, `1G`, `500000`, `1e6`."""
    match = re.fullmatch(r"([0-9.eE+-]+?)(Ki|Mi|Gi|Ti|k|M|G|T|)", str(text).strip())
    if match is None:
        raise ValueError(f"unsupported memory quantity {text!r}")
    return int(float(match[1]) * _UNITS[match[2]])


def pid_state(pid: int) -> str:
    """The one-letter state of a process (R, S, Z...), or "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids of every live process."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def tree(root: int, children: dict[int, list[int]]) -> list[int]:
    """`root` and all its descendants."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process, 0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_pss_bytes(root: int, children: dict[int, list[int]] | None = None) -> int:
    return sum(pss_bytes(pid) for pid in tree(root, children if children is not None else children_map()))
