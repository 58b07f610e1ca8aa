"""Clips: a camera's recording between two times, cut from the segments without re-encoding.

The segments overlapping the range go through ffmpeg's concat demuxer with stream copy into one
MP4 with faststart (the index in front, so a browser plays while it downloads). A stream copy
can only start on a keyframe: the clip starts on the last keyframe at or before the asked start
(found from the first segment's packet flags, no decoding) and ends at the asked end; the real
start and end are what the answer reports. Clip urls are signed (HMAC-SHA256 with the box's
video secret over clip id and expiry) and expire.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from edge.recorder.segments import probe_duration, secure_dir

CLIP_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
GAP_TOLERANCE_S = 0.5  # wall-clock stamps jitter: smaller holes are not missing recording


class ClipRefused(Exception):
    """A clip that cannot be made: status and code for the API, detail for a person."""

    def __init__(self, status: int, code: str, detail: str, pointer: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.pointer = status, code, detail, pointer


@dataclass(frozen=True)
class Clip:
    id: str
    camera: str
    start: float  # the real (keyframe-aligned) start, epoch seconds
    end: float
    path: Path
    bytes: int
    missing: list[tuple[float, float]]


def uncovered(segments: list[tuple[float, float, str, int]], start: float,
              end: float) -> list[tuple[float, float]]:
    """Parts of [start, end] no segment covers (holes under GAP_TOLERANCE_S ignored)."""
    holes: list[tuple[float, float]] = []
    cursor = start
    for s, e, _p, _b in segments:
        if s - cursor > GAP_TOLERANCE_S:
            holes.append((cursor, min(s, end)))
        cursor = max(cursor, e)
        if cursor >= end:
            break
    if end - cursor > GAP_TOLERANCE_S:
        holes.append((cursor, end))
    return holes


async def keyframes(path: Path) -> list[float]:
    """Keyframe times of a segment from packet flags (demux only)."""
    proc = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
        "packet=pts_time,flags", "-of", "json", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    try:
        pkts = json.loads(out).get("packets", [])
    except ValueError:
        return [0.0]
    ks = sorted(float(p["pts_time"]) for p in pkts
                if "K" in p.get("flags", "") and p.get("pts_time") not in (None, "N/A"))
    return ks or [0.0]


async def cut(folder: Path, out_dir: Path, camera: str,
              segments: list[tuple[float, float, str, int]], start: float,
              end: float) -> Clip:
    """Concatenate and trim `segments` (oldest first, overlapping [start, end])."""
    segs = [s for s in segments if (folder / s[2]).exists()]
    if not segs:
        raise ClipRefused(404, "no-recording", "the recording's files are gone (retention)")
    first_start = segs[0][0]
    rel_in = max(0.0, start - first_start)
    ks = await keyframes(folder / segs[0][2])
    kf = max([k for k in ks if k <= rel_in + 1e-3] or [ks[0]])
    real_start = first_start + kf
    secure_dir(out_dir)
    clip_id = secrets.token_urlsafe(18)
    listing = out_dir / f"{clip_id}.txt"
    out = out_dir / f"{clip_id}.mp4"
    lines = ["ffconcat version 1.0"]
    for i, (s, e, p, _b) in enumerate(segs):
        lines.append("file '" + str((folder / p).resolve()).replace("'", "'\\''") + "'")
        if i == 0 and kf > 0:
            lines.append(f"inpoint {kf:.6f}")
        if i == len(segs) - 1 and end < e:
            lines.append(f"outpoint {max(0.0, end - s):.6f}")
    listing.write_text("\n".join(lines) + "\n")
    old = os.umask(0o077)
    try:
        proc = await asyncio.create_subprocess_exec(
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "concat",
            "-safe", "0", "-i", str(listing), "-map", "0:v:0", "-c", "copy",
            "-movflags", "+faststart", "-y", str(out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
    finally:
        os.umask(old)
        listing.unlink(missing_ok=True)
    if proc.returncode != 0 or not out.exists():
        out.unlink(missing_ok=True)
        raise ClipRefused(500, "export-failed",
                          "ffmpeg could not cut the clip: " + err.decode(errors="replace")[-300:])
    dur = await probe_duration(out) or 0.0
    return Clip(clip_id, camera, real_start, real_start + dur, out, out.stat().st_size, [])


# ---- signed urls -----------------------------------------------------------------------------
def load_secret(path: Path) -> bytes:
    """The box's video secret: made once, kept 0600 in the data directory."""
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


def sign(secret: bytes, clip_id: str, expires: int) -> str:
    return hmac.new(secret, f"{clip_id}.{expires}".encode(), hashlib.sha256).hexdigest()


def check(secret: bytes, clip_id: str, expires: str, sig: str,
          now: float | None = None) -> None:
    """Raise ClipRefused unless the signature is ours and not expired."""
    if not CLIP_ID.fullmatch(clip_id):
        raise ClipRefused(400, "bad-path", "a clip id is 16-64 letters, digits, - and _",
                          "/path/clip")
    try:
        exp = int(expires)
    except ValueError:
        raise ClipRefused(403, "forged-url", "the url's expiry is not a number",
                          "/query/exp") from None
    if not re.fullmatch(r"[0-9a-f]{64}", sig or "") or not hmac.compare_digest(
            sign(secret, clip_id, exp), sig):
        raise ClipRefused(403, "forged-url", "the url's signature is not this box's",
                          "/query/sig")
    if exp < (now if now is not None else time.time()):
        raise ClipRefused(410, "expired-url", "the url has expired; ask for the clip again",
                          "/query/exp")
