"""File-system safety for every command that writes: atomic writes, output claims, stale temporaries.

- `write_bytes_atomic`: the bytes go to a hidden temporary in the target folder, then are renamed over the
  target, so no reader (and no interrupted run) ever sees half a file. The file gets the usual mode for
  new files (0666 less the umask), not mkstemp's 0600.
- `claimed` / `try_claim`: before computing an output, a process creates `.NAME.sdtool-claim` exclusively
  (O_EXCL). Several processes on one folder (or several machines on a shared disk) then share the work:
  none computes or replaces what another has claimed. A claim whose process is gone (same host, dead pid,
  or older than STALE_CLAIM_S) is stale and taken over.
- `clean_stale_temporaries`: temporaries of this tool left by a killed process (`kill -9`) are removed on
  the next run in that folder.
"""

from __future__ import annotations

import os
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

TMP_TAG = "sdtool"
CLAIM_SUFFIX = ".sdtool-claim"
STALE_CLAIM_S = 6 * 3600.0  # a claim from another host is trusted this long
_TMP_RE = re.compile(r"^\..+\.sdtool-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


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
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())  # no "-": the name is split on it


def _writer_gone(host: str, pid: int, path: Path) -> bool:
    """A temporary's writer is gone: a dead process on this host, or (another machine on a shared disk) the file
    has not changed for STALE_CLAIM_S."""
    if host == _host():
        return not _pid_alive(pid)
    try:
        return time.time() - path.stat().st_mtime > STALE_CLAIM_S
    except OSError:
        return False


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary in the same folder and a rename (see module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{TMP_TAG}-{_host()}-{os.getpid()}-{os.urandom(4).hex()}.tmp"
    try:  # the open inside: an interrupt (Ctrl-C, SIGTERM) right after it must not leave the temporary behind
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def clean_stale_temporaries(folder: PathLike, recursive: bool = False) -> list[Path]:
    """Remove this tool's temporaries and claims in `folder` whose process no longer runs; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed: list[Path] = []
    for p in (folder.rglob(".*") if recursive else folder.glob(".*")):
        m = _TMP_RE.match(p.name)
        if m is not None:
            stale = _writer_gone(m.group("host"), int(m.group("pid")), p)
        else:
            stale = p.name.endswith(CLAIM_SUFFIX) and _claim_is_stale(p)
        if not stale:
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def claim_path(output: Path) -> Path:
    return output.with_name(f".{output.name}{CLAIM_SUFFIX}")


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


def try_claim(output: Path) -> Optional[Path]:
    """Create the claim file of `output` exclusively; its path, or None when another process holds it."""
    claim = claim_path(output)
    claim.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
        except FileExistsError:
            if not _claim_is_stale(claim):
                return None
            try:
                claim.unlink()
            except FileNotFoundError:
                pass
            continue
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()} {_host()} {time.time():.3f}\n")
        except BaseException:  # interrupted between creating and returning it: not ours to leave behind
            release_claim(claim)
            raise
        return claim
    return None


def release_claim(claim: Optional[Path]) -> None:
    if claim is not None:
        try:
            claim.unlink()
        except OSError:
            pass


@contextmanager
def claimed(outputs: list[Path]) -> Iterator[list[bool]]:
    """Claim the outputs in order; yields one flag per output (True = ours to write). Claiming stops at the
    first output another process holds: two processes claiming the same list never split one file's outputs
    between them (each would count it done). Released on exit, also on KeyboardInterrupt/SystemExit."""
    claims: list[Optional[Path]] = []
    try:  # claims taken before an interrupt are released too
        for p in outputs:
            claims.append(try_claim(p))
            if claims[-1] is None:
                break
        yield [c is not None for c in claims] + [False] * (len(outputs) - len(claims))
    finally:
        for c in claims:
            release_claim(c)
