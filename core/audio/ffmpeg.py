"""Finding and running ffmpeg: one place that knows the binary, the flags every call needs, and the limits.

The static build shipped in the imageio-ffmpeg wheel is preferred (EARSHOT_FFMPEG=bundled, the default):
it starts in ~10 ms of CPU where a distribution's dynamically linked build takes ~60 ms (Debian's links
215 libraries), and for a voice note of a few seconds the start is most of what ffmpeg costs
(BENCHMARKS.md, "CPU per voice note"). It is updated with earshot's dependencies (`pip install -U
imageio-ffmpeg`; the deploy lock pins it). EARSHOT_FFMPEG=system prefers an ffmpeg on PATH (a distribution's
security updates); each choice falls back to the other when its binary is missing or can't encode MP3, so a
machine with no ffmpeg at all still works. ffprobe is never needed.
"""
from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Sequence

from core import metrics
from core.errors import AudioError
from core.words import messages

# Caps for one ffmpeg child, so a hostile file can't eat the machine.
MEMORY_LIMIT = 1 << 30           # bytes of address space
BASE_ARGS = ("-nostdin", "-hide_banner", "-loglevel", "error")
# glibc reserves 64 MiB of address space per malloc arena (up to 8 per core); ffmpeg runs a thread per
# encoder and muxer, so without this the address-space cap would make thread creation fail.
CHILD_ENV = {"MALLOC_ARENA_MAX": "2"}
# All ffmpeg inherits from our environment: enough to run, never the API keys and tokens beside them
# (a decoder bug exploited by a hostile file must find nothing worth stealing).
INHERITED_ENV = ("PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "TMPDIR", "HOME")

try:
    import resource
except ImportError:              # Windows: no rlimits; the wall-clock timeout still applies
    resource = None  # type: ignore[assignment]
try:
    import fcntl
except ImportError:
    fcntl = None  # type: ignore[assignment]

PIPE_SIZE = 1 << 20              # Linux's default cap for unprivileged processes
_F_SETPIPE_SZ = 1031


class FfmpegError(Exception):
    """ffmpeg exited non-zero. `stderr` holds its (error-level) log for classification and logs."""

    def __init__(self, returncode: int, stderr: str) -> None:
        # the first line usually names the cause, the last what failed as a result
        lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
        summary = " | ".join(dict.fromkeys(lines[:1] + lines[-1:])) or "no message"
        super().__init__(f"ffmpeg exited {returncode}: {summary[:300]}")
        self.returncode = returncode
        self.stderr = stderr


def _works(exe: str) -> bool:
    """True if `exe` runs and can encode MP3 (some minimal builds can't).

    A yes is remembered per binary (path, size, mtime) in the user cache directory: asking costs an
    ffmpeg start (~60 ms for a dynamically linked one), which each one-shot `earshot` command would pay."""
    try:
        st = os.stat(exe)
        seen = f"{os.path.realpath(exe)} {st.st_size} {st.st_mtime_ns}\n"
    except OSError:
        return False
    import platformdirs
    memo = os.path.join(platformdirs.user_cache_dir("earshot", appauthor=False), "ffmpeg-encodes-mp3")
    try:
        with open(memo) as f:
            if seen in f.readlines():
                return True
    except OSError:
        pass
    if not _encodes_mp3(exe):
        return False
    try:
        os.makedirs(os.path.dirname(memo), exist_ok=True)
        with open(memo, "a") as f:
            f.write(seen)
    except OSError:            # a read-only home: ask again next time
        pass
    return True


def _encodes_mp3(exe: str) -> bool:
    try:
        out = subprocess.run([exe, *BASE_ARGS, "-encoders"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and b"libmp3lame" in out.stdout


_choice: str | None = None


def choose(choice: str | None) -> None:
    """Pick the binary: None or "bundled" prefers the wheel's static build, "system" an ffmpeg on PATH,
    anything else is a path."""
    global _choice
    if choice != _choice:
        _choice = choice
        executable.cache_clear()


def _bundled() -> str | None:
    """The imageio-ffmpeg wheel's static build, when the wheel has one for this platform."""
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None


@functools.cache
def executable() -> str:
    """Path of the ffmpeg to use, found once per process; pydub is pointed at it too."""
    if _choice not in (None, "", "system", "bundled"):
        exe = _choice
    else:
        finders = [_bundled, lambda: shutil.which("ffmpeg")]
        if _choice == "system":
            finders.reverse()
        found = [path for find in finders if (path := find())]
        # the first that runs and encodes MP3; else the first found, whose error then says what is wrong
        exe = next((path for path in found if _works(path)), found[0] if found else "ffmpeg")
    with warnings.catch_warnings():   # pydub warns at import when no ffmpeg is on PATH
        warnings.simplefilter("ignore")
        from pydub import AudioSegment
    AudioSegment.converter = exe
    return exe


def child_env() -> dict[str, str]:
    return {k: v for k in INHERITED_ENV if (v := os.environ.get(k)) is not None} | CHILD_ENV


def limit_child(pid: int, timeout: float) -> None:
    """Cap the child's CPU seconds and address space.

    Set from the parent with prlimit (Linux) rather than a preexec_fn, which is unsafe in the
    threaded service; the child has at most microseconds of work before the caps apply.
    """
    if resource is None or not hasattr(resource, "prlimit"):
        return
    cpu = math.ceil(timeout) * 2 + 1    # ffmpeg is multithreaded: CPU time can outrun the wall clock
    try:
        resource.prlimit(pid, resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.prlimit(pid, resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (OSError, ValueError):       # the child already exited, or the platform refuses
        pass


def _widen(*pipes: object) -> None:
    """Grow the pipes to 1 MiB: PCM moves in small packets, and with 64 KiB pipes the two processes
    spend their time waking each other (measured: ~20% of a long decode)."""
    if fcntl is None:
        return
    for pipe in pipes:
        if pipe is not None:
            try:
                fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, PIPE_SIZE)   # type: ignore[attr-defined]
            except OSError:      # not Linux, or the system caps pipes lower
                pass


def run(args: Sequence[str], *, input: bytes | None = None, timeout: float) -> bytes:
    """Run ffmpeg with `args` (after the common flags) and return its stdout.

    Raises AudioError(DECODE_TIMEOUT) if it runs past `timeout` seconds (the child is killed), and
    FfmpegError if it exits non-zero.
    """
    return start(args, input=input, timeout=timeout).wait()


def start(args: Sequence[str], *, input: bytes | None = None, timeout: float) -> Child:
    """Start ffmpeg with `args` and return at once, for work begun ahead of need: `Child.wait()` gives
    what `run` would have, with the same timeout counted from now."""
    return Child([executable(), *BASE_ARGS, *args], input, timeout)


class Child:
    """One ffmpeg child, capped as `limit_child` says; `wait` once for its stdout, or `kill` it."""

    def __init__(self, cmd: list[str], input: bytes | None, timeout: float) -> None:
        self._started = time.perf_counter()
        self._input, self._timeout = input, timeout
        stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
        self._proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=child_env())
        limit_child(self._proc.pid, timeout)
        _widen(self._proc.stdin, self._proc.stdout)

    def wait(self) -> bytes:
        proc = self._proc
        try:
            with proc:
                left = self._timeout - (time.perf_counter() - self._started)
                try:
                    out, err = proc.communicate(self._input, timeout=max(left, 0.0))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
                    raise AudioError(messages.DECODE_TIMEOUT,
                                     f"ffmpeg ran over {self._timeout:g} s and was killed") from None
                except BaseException:
                    proc.kill()
                    raise
        finally:
            metrics.ffmpeg_seconds(time.perf_counter() - self._started)
        if proc.returncode != 0:
            raise FfmpegError(proc.returncode, err.decode("utf-8", "replace"))
        return out

    def kill(self) -> None:
        """Stop it and reap it (its output is not wanted)."""
        with self._proc as proc:
            proc.kill()
            proc.communicate()
