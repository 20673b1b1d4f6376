"""Raw files on disk, whatever their names and kinds: printable names, discovery that
refuses special files and escaping links, and placement that never overwrites.

File names are arbitrary bytes (Python holds undecodable bytes as surrogates) of any
length up to the system limit. Every name shown to a person or stored in a ledger goes
through ``shown``; every name created here fits ``NAME_MAX`` with a ``.reason.json``
sidecar beside it, and is unique in its folder.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NAME_MAX = 255                     # bytes, Linux and macOS
SIDECAR = ".reason.json"
DONE_MARKER = ".done"
NAME_BUDGET = NAME_MAX - len(SIDECAR) - 8  # room for the sidecar and a "~N" counter


def shown(path: str | os.PathLike) -> str:
    """One printable line for a path: undecodable bytes as ``\\xNN``, control and
    invisible characters (newlines, bidi overrides) escaped."""
    text = os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Refused:
    """A path found but not taken: not a regular file, a link leaving its folder, or
    unreadable. Never opened."""
    path: Path
    reason: str


def kind_problem(path: Path, root: Path) -> str | None:
    """Why ``path`` (found under ``root``) must not be opened, or None."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            target = Path(os.path.realpath(path))
            if not inside(target, root):
                return f"symbolic link leaving {shown(root)} (to {shown(target)}); not followed"
            st = os.stat(path)
    except OSError as exc:
        return f"cannot inspect file ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file ({_kind(st.st_mode)}); not opened"
    return None


def take(path: Path, root: Path, found: list[Path], refused: list[Refused]) -> None:
    """Add ``path`` to ``found``, or to ``refused`` with the reason."""
    problem = kind_problem(path, root)
    if problem:
        refused.append(Refused(path, problem))
    else:
        found.append(path)


def walk(root: Path, wanted) -> tuple[list[Path], list[Refused]]:
    """Files under folder ``root`` for which ``wanted(name)`` holds, sorted, and the
    entries refused. Links to folders are not followed; an unreadable folder is refused
    and the rest of the walk goes on."""
    found: list[Path] = []
    refused: list[Refused] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            refused.append(Refused(folder, f"cannot list folder ({exc.strerror})"))
            continue
        for entry in entries:
            if _is_folder(entry):
                stack.append(Path(entry.path))
            elif wanted(entry.name):
                take(Path(entry.path), root, found, refused)
    return sorted(found), refused


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False  # then inspected as a file, and refused with the reason


def fit_name(name: str, budget: int = NAME_BUDGET) -> str:
    """``name`` cut to ``budget`` bytes, keeping its suffix and a hash of the whole
    name so that two long names cut alike stay apart."""
    raw = os.fsencode(name)
    if len(raw) <= budget:
        return name
    suffix = os.fsencode(Path(name).suffix)
    suffix = suffix if len(suffix) <= 16 else b""
    digest = hashlib.sha256(raw).hexdigest()[:10].encode()
    keep = budget - len(suffix) - len(digest) - 1
    return os.fsdecode(raw[:keep] + b"-" + digest + suffix)


def _candidates(name: str):
    base = fit_name(name)
    yield base
    stem, suffix = _split(base)
    for n in range(2, 100_000):
        yield f"{stem}~{n}{suffix}"


def _split(name: str) -> tuple[str, str]:
    suffix = Path(name).suffix
    return (name[: -len(suffix)], suffix) if suffix and len(suffix) <= 16 else (name, "")


def place(src: Path, folder: Path, move: bool) -> Path:
    """Move (or copy) ``src`` into ``folder`` under a new unique name; never overwrites
    a file nor takes a name whose ``.reason.json`` is there already."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in _candidates(src.name):
        target = folder / name
        if os.path.lexists(folder / (name + SIDECAR)):
            continue
        try:
            if move:
                _move_new(src, target)
            else:
                _copy_new(src, target)
            return target
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free name", str(folder))


def _move_new(src: Path, target: Path) -> None:
    with _signals_held():  # a stop between link and unlink would leave the file in both folders
        try:
            os.link(src, target)  # fails if target exists: the exclusive rename
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise
            _copy_new(src, target)  # another file system, or no hard links there
        os.unlink(src)


_HELD = ("SIGINT", "SIGTERM", "SIGHUP")


@contextmanager
def _signals_held():
    """Run a block to its end before SIGINT, SIGTERM or SIGHUP are acted on (they are
    delivered after it). A ``finally`` clause is not enough: the signal's handler may
    raise inside the ``finally`` itself. Handlers can be swapped in the main thread only;
    elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    before = {}
    try:
        for sig in (getattr(signal, name) for name in _HELD if hasattr(signal, name)):
            before[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in caught:
            signal.raise_signal(sig)


def _copy_new(src: Path, target: Path) -> None:
    with open(src, "rb") as r, open(target, "xb") as w:
        try:
            shutil.copyfileobj(r, w, 1 << 20)
        except BaseException:
            w.close()
            os.unlink(target)  # no half copy left behind (full disk...)
            raise
    shutil.copystat(src, target)


def consume_marker(path: Path) -> None:
    """Remove ``<name>.done`` once its file has left the landing folder, so a new file
    of the same name waits for its own marker."""
    try:
        os.unlink(path.with_name(path.name + DONE_MARKER))
    except OSError:
        pass


def inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"
