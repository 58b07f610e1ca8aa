"""Recording segments on disk: the ffmpeg command, run folders, and crash repair.

Container: fragmented MP4, not MPEG-TS. Both survive a SIGKILL of ffmpeg when the segment
muxer flushes every packet (`-segment_format_options
movflags=+frag_keyframe+empty_moov+default_base_moof:flush_packets=1`; the top-level
`-flush_packets` does not reach the segment muxer): every fragment is complete on disk as soon
as it is written, and the last one is at worst cut short, which ffprobe and the concat demuxer
read up to the cut. fMP4 wins because clips are MP4 (what a browser plays) and concatenating
MP4 segments into a faststart MP4 is a plain stream copy; TS segments would need their
timestamps rebased and a remux with the h264_mp4toannexb/aac_adtstoasc dance, and a browser
cannot scrub a TS file.

Times: ffmpeg stamps packets with the box's wall clock on arrival
(`-use_wallclock_as_timestamps 1`), as Frigate does, so recordings line up with the queue's
events even when a camera's clock or frame rate wanders; each segment restarts at zero
(`-reset_timestamps 1`) so segments concatenate. The segment muxer's CSV list gives each closed
segment's start and end relative to the run's first packet, whose wall-clock time ffmpeg prints
as the input's `start:`; absolute = base + relative.

Layout: {folder}/{camera}/{run}/NNNNNN.mp4, one run folder per ffmpeg process ({run} is the
launch time in ms), with its `list.csv` and a `base` file holding the run's first-packet time.
A file whose index row is missing (the box died between the segment closing and the index
write, or ffmpeg was killed mid-segment) is found again at start: its times come from the list
(closed segments) or from the previous segment's end plus ffprobe's duration (the open one).
Files are 0600, folders 0700: recordings are evidence, readable only by the box's user.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

SEGMENT_RE = re.compile(r"[0-9]{6}\.mp4")
RUN_RE = re.compile(r"[0-9]{13}")
START_RE = re.compile(r"Duration: [^,]+, start: (-?\d+(?:\.\d+)?)")
FRAG_OPTIONS = "movflags=+frag_keyframe+empty_moov+default_base_moof:flush_packets=1"


@dataclass(frozen=True)
class Segment:
    camera: str
    start: float  # Unix epoch seconds
    end: float
    path: str  # relative to the recording folder
    bytes: int

    def row(self) -> tuple[str, float, float, str, int]:
        return (self.camera, self.start, self.end, self.path, self.bytes)


def redacted(url: str) -> str:
    """A url for logs and health: credentials never leave the box's memory."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, "<redacted>@" + parts.netloc.rsplit("@", 1)[1], parts.path,
                       parts.query, parts.fragment))


_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")


def scrub(text: str) -> str:
    """Any url credentials in free text (ffmpeg's messages name the url it opened) removed."""
    return _CREDENTIALS.sub(r"\1<redacted>@", text)


def record_command(url: str, run_dir: Path, segment_seconds: int, transport: str,
                   ffmpeg: str = "ffmpeg") -> list[str]:
    """One ffmpeg per camera: stream copy into the segment muxer (no decoding, no encoding)."""
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"]
    if url.startswith("rtsp"):
        # -timeout: a source that stops sending makes ffmpeg give up (µs) instead of hanging.
        cmd += ["-rtsp_transport", transport, "-timeout", "5000000"]
    cmd += ["-fflags", "+genpts+discardcorrupt", "-use_wallclock_as_timestamps", "1",
            "-i", url, "-map", "0:v:0", "-c", "copy",
            "-f", "segment", "-segment_time", str(segment_seconds),
            "-segment_format", "mp4", "-segment_format_options", FRAG_OPTIONS,
            "-reset_timestamps", "1",
            "-segment_list", str(run_dir / "list.csv"), "-segment_list_type", "csv",
            str(run_dir / "%06d.mp4")]
    return cmd


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the box dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG), so a crashed box never leaves a second recorder running."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)


def secure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def secure_files(run_dir: Path) -> None:
    """ffmpeg creates files with the umask; recordings are the box user's only."""
    for p in run_dir.iterdir():
        try:
            if p.stat().st_mode & 0o077:
                os.chmod(p, 0o600)
        except FileNotFoundError:
            pass


def parse_list(text: str) -> list[tuple[str, float, float]]:
    """The segment muxer's CSV list: complete lines `name,start,end` (a cut last line is not)."""
    out = []
    for line in text.split("\n")[:-1]:  # the text after the last newline may be half-written
        parts = line.strip().split(",")
        if len(parts) != 3 or not SEGMENT_RE.fullmatch(parts[0]):
            continue
        try:
            out.append((parts[0], float(parts[1]), float(parts[2])))
        except ValueError:
            continue
    return out


class ListTail:
    """Follows a segment list as ffmpeg appends to it: each call returns the new complete
    lines only (a line cut mid-write waits for the next call)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.partial = ""

    def new_entries(self) -> list[tuple[str, float, float]]:
        try:
            if self.path.stat().st_size <= self.pos:
                return []
            with self.path.open("r", encoding="utf-8", errors="replace") as f:
                f.seek(self.pos)
                data = f.read()
                self.pos = f.tell()
        except OSError:
            return []
        text = self.partial + data
        cut = text.rfind("\n") + 1
        self.partial = text[cut:]
        return parse_list(text[:cut])


async def probe(path: Path, ffprobe: str = "ffprobe") -> dict[str, object] | None:
    """ffprobe's format and first video stream, or None when it cannot read the file."""
    proc = await asyncio.create_subprocess_exec(
        ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
        "-select_streams", "v:0", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        return None
    try:
        doc = json.loads(out)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


async def probe_duration(path: Path) -> float | None:
    doc = await probe(path)
    if not doc:
        return None
    fmt = doc.get("format")
    try:
        return float(fmt["duration"]) if isinstance(fmt, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


async def repair_run(folder: Path, camera: str, run_dir: Path,
                     indexed: set[str]) -> list[Segment]:
    """Segments of one finished run that are on disk but not in the index.

    A file with no frames (ffmpeg stopped right after opening it) is deleted.
    """
    base_file = run_dir / "base"
    try:
        base = float(base_file.read_text().strip())
    except (OSError, ValueError):
        base = int(run_dir.name) / 1000.0  # launch time: off by the connect time at most
    try:
        entries = parse_list((run_dir / "list.csv").read_text())
    except OSError:
        entries = []
    listed = {name: (s, e) for name, s, e in entries}
    found: list[Segment] = []
    prev_end = base
    for f in sorted(p for p in run_dir.iterdir() if SEGMENT_RE.fullmatch(p.name)):
        rel = f.relative_to(folder).as_posix()
        if f.name in listed:
            s, e = listed[f.name]
            prev_end = base + e
            if rel not in indexed:
                found.append(Segment(camera, base + s, base + e, rel, f.stat().st_size))
            continue
        if rel in indexed:
            continue
        dur = await probe_duration(f)
        if not dur or dur <= 0:
            log.info("%s: removing %s (no frames)", camera, rel)
            f.unlink(missing_ok=True)
            continue
        found.append(Segment(camera, prev_end, prev_end + dur, rel, f.stat().st_size))
        prev_end += dur
    return found


def runs(camera_dir: Path) -> list[Path]:
    if not camera_dir.is_dir():
        return []
    return sorted(p for p in camera_dir.iterdir() if p.is_dir() and RUN_RE.fullmatch(p.name))
