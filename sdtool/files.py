"""File-system safety for every command that writes: the one atomic writer, output claims, stale temporaries.

- `write_bytes_atomic`: the one writer of the package (images, side files, checkpoints, training state, reports).
  The content goes to a hidden temporary in the target folder, then is renamed over the target, so no reader
  (and no interrupted run) ever sees half a file. The file gets the usual mode for new files (0666 less the
  umask). A refusal of the file system (full disk, read-only folder, no permission, name too long) is a
  `WriteError` naming the file, and nothing is left behind.
- `claimed`: before computing a file's outputs, a process creates `.NAME.sdtool-claim` beside its first output
  exclusively (O_EXCL). Several processes on one folder (or several machines on a shared disk) then share the
  work: none computes or replaces what another has claimed. A claim whose process is gone (same host, dead pid,
  or older than STALE_CLAIM_S) is stale and taken over.
- `clean_stale_temporaries`: temporaries and claims of this tool left by a killed process (`kill -9`) are
  removed on the next run in that folder.

Claims and temporaries keep at most NAME_BUDGET bytes of the output's name (a longer one is cut and ends in a
hash of the whole name), so an output whose own name is near the file system's limit can still be claimed
and written.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Sequence, Union

from sdtool.errors import WriteError

PathLike = Union[str, "os.PathLike[str]"]
Buffer = Union[bytes, bytearray, memoryview]
# What the writer stores: a buffer, buffers written one after the other, or a function that writes to the file.
Content = Union[Buffer, Sequence[Buffer], Callable[[BinaryIO], None]]

TMP_TAG = "sdtool"
CLAIM_SUFFIX = ".sdtool-claim"
STALE_CLAIM_S = 6 * 3600.0  # a claim from another host is trusted this long
NAME_BUDGET = 100  # bytes of an output's name kept in its claim's and temporaries' names
NAME_MAX = 255  # bytes in one file name on the usual file systems (ext4, xfs, btrfs, tmpfs, APFS, NTFS)
_TMP_RE = re.compile(r"^\..+\.sdtool-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")
_OLD_TMP_RE = re.compile(r"^\..+\.sdtool-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")  # earlier versions' training state: no host


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64]  # no "-": the name is split on it


def short_name(name: str) -> str:
    """`name`, or when it is longer than NAME_BUDGET bytes its head and a hash of the whole: the part of an
    output's name that its claim and temporaries carry."""
    raw = os.fsencode(name)
    if len(raw) <= NAME_BUDGET:
        return name
    head = raw[: NAME_BUDGET - 17].decode("utf-8", "ignore")  # cut on a character boundary
    return f"{head}~{hashlib.sha256(raw).hexdigest()[:16]}"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_name(path: Path) -> None:
    """WriteError when the file name of `path` is longer than a file system stores (checked before any work)."""
    size = len(os.fsencode(path.name))
    if size > NAME_MAX:
        raise WriteError(f"{path}: cannot write: file name too long ({size} bytes; file systems store {NAME_MAX})",
                         errno.ENAMETOOLONG)


def _writer_gone(host: str, pid: int, path: Path) -> bool:
    """A temporary's writer is gone: a dead process on this host, or (another machine on a shared disk) the file
    has not changed for STALE_CLAIM_S."""
    if host == _host():
        return not _pid_alive(pid)
    try:
        return time.time() - path.stat().st_mtime > STALE_CLAIM_S
    except OSError:
        return False


def temporary_path(path: Path) -> Path:
    """A new hidden temporary beside `path` whose name says which process writes it (see `clean_stale_temporaries`)."""
    return path.parent / f".{short_name(path.name)}.{TMP_TAG}-{_host()}-{os.getpid()}-{os.urandom(4).hex()}.tmp"


class _Sink:
    """The temporary as a writing function sees it. It remembers an OS error (a full disk) that a library may
    wrap in an error of its own (torch.save raises RuntimeError "unexpected pos")."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.error: Optional[OSError] = None

    def write(self, data: Buffer) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def _emit(sink: _Sink, content: Content) -> None:
    if callable(content):
        content(sink)  # type: ignore[arg-type]
    elif isinstance(content, (bytes, bytearray, memoryview)):
        sink.write(content)
    else:
        for part in content:
            sink.write(part)


def _discard(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_bytes_atomic(path: PathLike, content: Content) -> None:
    """Write `content` (bytes, a sequence of buffers, or a function writing to a binary file) to `path` through
    a temporary in the same folder and a rename. Raises WriteError when the file system refuses (also when a
    writing function wrapped that refusal in its own error); other errors pass through. Either way no
    temporary is left."""
    path = Path(path)
    check_name(path)
    tmp = temporary_path(path)
    sink: Optional[_Sink] = None
    try:  # the open inside: an interrupt (Ctrl-C, SIGTERM) right after it must not leave the temporary behind
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            sink = _Sink(fh)
            _emit(sink, content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _discard(tmp)
        refused = exc if isinstance(exc, OSError) else (sink.error if isinstance(exc, Exception) and sink else None)
        if refused is not None:
            raise WriteError(f"{path}: cannot write: {_reason(refused)}", refused.errno or 0) from None
        raise


def clean_stale_temporaries(folder: PathLike, recursive: bool = False) -> list[Path]:
    """Remove this tool's temporaries and claims in `folder` whose process no longer runs; returns them."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        if not folder.is_dir():
            return []
        candidates = list(folder.rglob(".*") if recursive else folder.glob(".*"))
    except OSError:  # unreadable: nothing of ours can be judged there
        return []
    for p in candidates:
        if _is_stale(p):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def _is_stale(p: Path) -> bool:
    m = _TMP_RE.match(p.name)
    if m is not None:
        return _writer_gone(m.group("host"), int(m.group("pid")), p)
    m = _OLD_TMP_RE.match(p.name)
    if m is not None:
        return _writer_gone(_host(), int(m.group("pid")), p)
    return p.name.endswith(CLAIM_SUFFIX) and _claim_is_stale(p)


def claim_path(output: Path) -> Path:
    return output.with_name(f".{short_name(output.name)}{CLAIM_SUFFIX}")


def _claim_is_stale(claim: Path) -> bool:
    try:
        pid_s, host, started = claim.read_text().split()[:3]
        pid, t0 = int(pid_s), float(started)
    except (OSError, ValueError):
        # Unreadable or half-written: stale only once it is clearly old (its writer may be mid-write).
        try:
            return time.time() - claim.stat().st_mtime > 60
        except OSError:
            return True
    if host == _host():
        return not _pid_alive(pid)
    return time.time() - t0 > STALE_CLAIM_S


def _create_claim(claim: Path) -> bool:
    """Create `claim` exclusively with our pid, host and time; False when it exists. OSError passes through."""
    try:
        fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()} {_host()} {time.time():.3f}\n")
    except BaseException:  # a full disk, or interrupted between creating and returning it: not ours to leave
        release_claim(claim)
        raise
    return True


def try_claim(output: Path) -> Optional[Path]:
    """Create the claim file of `output` exclusively; its path, or None when another process holds it.
    Raises WriteError when the output cannot be written there (its name too long, the folder read-only or
    not ours, the disk full)."""
    check_name(output)
    claim = claim_path(output)
    try:
        claim.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            if _create_claim(claim):
                return claim
            if not _claim_is_stale(claim):
                return None
            _discard(claim)
    except OSError as exc:
        raise WriteError(f"{output}: cannot write: {_reason(exc)}", exc.errno or 0) from None
    return None


def release_claim(claim: Optional[Path]) -> None:
    if claim is not None:
        _discard(claim)


@contextmanager
def claimed(output: Path) -> Iterator[bool]:
    """Claim `output` (a file's first output stands for all of them, so two processes never split one file's
    outputs); yields True when it is ours to write. Released on exit, also on KeyboardInterrupt/SystemExit.
    Raises WriteError as `try_claim` does."""
    claim = try_claim(output)
    try:
        yield claim is not None
    finally:
        release_claim(claim)
