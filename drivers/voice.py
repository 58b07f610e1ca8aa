"""Voice announcements: "请 A023 号到 5 号窗口办理", spoken per zone, never cut off.

- Text: the ticket number is read digit by digit ("A 零二三"), the window as a number ("十二号
  窗口"), spelled out in Hanzi so the reading does not depend on the synthesiser's rules.
- Synthesis: espeak-ng's Mandarin voice to WAV (cached per sentence).
- One queue per zone (a speaker and the windows it serves). A new call waits for the one being
  spoken; a newer call for the same window replaces a queued older one (the board already
  shows the newer one).
- Capacity: a sentence takes 3–5 s, so a speaker saturates at 12–20 calls a minute. When more
  than `backlog_drop_repeats` announcements wait, repeats are dropped first; an announcement
  that would start more than `max_lag_seconds` after its board showed the call is skipped and
  counted: the board is the truth.
- Output: `AplaySpeaker` plays through aplay (or paplay); with --sim, `WavSink` writes each
  announcement to {data}/voice/{zone}/ and stays busy for the clip's real duration, so the queue
  behaves as with a real speaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import wave
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from drivers.base import DeviceHealthReporter
from edge.config.calling_devices import VoiceConfig
from edge.runtime import HallRuntime

log = logging.getLogger(__name__)

DIGITS = "零一二三四五六七八九"
LETTERS = {c: c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def ticket_words(number: str) -> str:
    """A023 -> "A 零二三": halls read ticket numbers digit by digit."""
    out = []
    for ch in number:
        if ch.isdigit():
            out.append(DIGITS[int(ch)])
        elif ch.upper() in LETTERS:
            out.append(f" {ch.upper()} ")
    return "".join(out).strip().replace("  ", " ")


def number_words(n: int) -> str:
    """A window number as spoken: 5 五, 12 十二, 20 二十, 105 一百零五 (up to 9999)."""
    if not 0 < n < 10_000:
        return " ".join(DIGITS[int(c)] for c in str(n))
    units = [(1000, "千"), (100, "百"), (10, "十")]
    out, zero = "", False
    for value, name in units:
        d = n // value % 10
        if d:
            if zero:
                out += "零"
                zero = False
            out += ("" if (value == 10 and d == 1 and not out) else DIGITS[d]) + name
        elif out:
            zero = True
    d = n % 10
    if d:
        out += ("零" if zero else "") + DIGITS[d]
    return out


def sentence(number: str, window: int) -> str:
    return f"请 {ticket_words(number)} 号到 {number_words(window)} 号窗口办理"


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / float(w.getframerate())


async def _communicate(proc: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    """communicate(), but a cancelled announcement also ends its child process."""
    try:
        return await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        raise


class Speaker(Protocol):
    async def play(self, wav: Path, zone: str, label: str) -> None: ...


class AplaySpeaker:
    """The audio device: aplay (ALSA) or paplay (PulseAudio), whichever is installed."""

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self.player = shutil.which("aplay") or shutil.which("paplay")

    async def play(self, wav: Path, zone: str, label: str) -> None:
        if self.player is None:
            raise RuntimeError("no audio player (aplay/paplay) installed")
        args = [self.player, "-q", str(wav)] if self.player.endswith("aplay") else \
            [self.player, str(wav)]
        if self.device and self.player.endswith("aplay"):
            args[1:1] = ["-D", self.device]
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await _communicate(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(self.player).name} failed: {err.decode(errors='replace')}")


class WavSink:
    """--sim and tests: keep each announcement as a WAV and stay busy for its duration.

    `time_scale` < 1 plays faster than real time (tests); the files are the real audio.
    """

    def __init__(self, out_dir: Path, time_scale: float = 1.0, keep: int = 200) -> None:
        self.out_dir = out_dir
        self.time_scale = time_scale
        self.keep = keep
        self.played: list[tuple[str, str, Path, float, float]] = []  # zone, label, file, t0, t1

    async def play(self, wav: Path, zone: str, label: str) -> None:
        loop = asyncio.get_running_loop()
        d = self.out_dir / zone
        d.mkdir(parents=True, exist_ok=True)
        dst = d / f"{len(self.played) + 1:05d}-{label}.wav"
        shutil.copyfile(wav, dst)
        t0 = loop.time()
        await asyncio.sleep(wav_seconds(wav) * self.time_scale)
        self.played.append((zone, label, dst, t0, loop.time()))
        if len(self.played) > self.keep:
            with contextlib.suppress(FileNotFoundError):
                self.played[-self.keep - 1][2].unlink()


class BoardAnnouncer:
    """The hall's call sentences as WAV files for a web board that plays them (small cache)."""

    def __init__(self, cache_dir: Path, voice: str = "cmn", speed: int = 175) -> None:
        self.synth = Synth(cache_dir, voice=voice, speed=speed, size=64)

    async def wav(self, number: str, window: int) -> Path:
        return await self.synth.wav(sentence(number, window))


class Synth:
    """espeak-ng to WAV files, cached by sentence."""

    def __init__(self, cache_dir: Path, voice: str = "cmn", speed: int = 150,
                 size: int = 256) -> None:
        self.cache_dir = cache_dir
        self.voice = voice
        self.speed = speed
        self.size = size
        self.exe = shutil.which("espeak-ng")
        self._cache: OrderedDict[str, Path] = OrderedDict()

    async def wav(self, text: str) -> Path:
        if text in self._cache:
            self._cache.move_to_end(text)
            return self._cache[text]
        if self.exe is None:
            raise RuntimeError("espeak-ng is not installed")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        out = self.cache_dir / (hashlib.sha256(
            f"{self.voice}|{self.speed}|{text}".encode()).hexdigest()[:16] + ".wav")
        proc = await asyncio.create_subprocess_exec(
            self.exe, "-v", self.voice, "-s", str(self.speed), "-w", str(out), text,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await _communicate(proc)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"espeak-ng failed: {err.decode(errors='replace').strip()}")
        self._cache[text] = out
        if len(self._cache) > self.size:
            _, old = self._cache.popitem(last=False)
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return out


@dataclass
class Announcement:
    window: int
    number: str
    text: str
    board_at: float  # loop time the board got the call
    times: int  # how many more times to say it
    said: int = 0


@dataclass
class ZoneStats:
    queued: int = 0
    spoken: int = 0  # sentences spoken (repeats included)
    skipped_lag: int = 0
    dropped_repeats: int = 0
    superseded: int = 0
    failed: int = 0
    lags_ms: list[int] = field(default_factory=list)  # board → start of speech, first saying

    def metrics(self, backlog: int) -> dict[str, int]:
        return {"queued": self.queued, "spoken": self.spoken, "skipped_lag": self.skipped_lag,
                "dropped_repeats": self.dropped_repeats, "superseded": self.superseded,
                "failed": self.failed, "backlog": backlog,
                "max_lag_ms": max(self.lags_ms, default=0)}


class VoiceZone:
    def __init__(self, rt: HallRuntime, zone_id: str, windows: list[int], synth: Synth,
                 speaker: Speaker, *, repeat: int, backlog_drop_repeats: int,
                 max_lag_s: float) -> None:
        self.id = zone_id
        self.windows = set(windows)
        self.synth = synth
        self.speaker = speaker
        self.repeat = repeat
        self.backlog_drop_repeats = backlog_drop_repeats
        self.max_lag_s = max_lag_s
        self.queue: deque[Announcement] = deque()
        self.stats = ZoneStats()
        self.speaking: Announcement | None = None
        self.health = DeviceHealthReporter(rt, f"voice-{zone_id}", "voice", offline_grade="C")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"voice-{self.id}")
        if self.synth.exe is None:
            self.health.offline("espeak-ng is not installed")
        elif isinstance(self.speaker, AplaySpeaker) and self.speaker.player is None:
            self.health.offline("no audio player (aplay/paplay) installed")
        else:
            self.health.ok("ready", self.stats.metrics(0))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def announce(self, number: str, window: int) -> None:
        loop = asyncio.get_running_loop()
        before = len(self.queue)
        self.queue = deque(a for a in self.queue if a.window != window)
        self.stats.superseded += before - len(self.queue)
        self.queue.append(Announcement(window, number, sentence(number, window), loop.time(),
                                       self.repeat))
        self.stats.queued += 1
        if len(self.queue) > self.backlog_drop_repeats:
            # Backlog: say each waiting call once before anything is said twice.
            for a in self.queue:
                if a.times > 1:
                    self.stats.dropped_repeats += a.times - 1
                    a.times = 1
        self._idle.clear()
        self._wake.set()

    async def idle(self, timeout: float) -> None:
        """Tests and bench: wait until the queue is empty and nothing is being spoken."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            a = self.queue.popleft()
            first = a.said == 0
            self.speaking = a
            try:
                wav = await self.synth.wav(a.text)
                # Checked after synthesis, right before the speaker starts: the real lag.
                lag = loop.time() - a.board_at
                if first and lag > self.max_lag_s:
                    self.stats.skipped_lag += 1
                    self.speaking = None
                    log.info("voice %s: skipped %s (%.1f s behind the board)", self.id,
                             a.number, lag)
                    self.health.update_metrics(self.stats.metrics(len(self.queue)))
                    continue
                if first:
                    self.stats.lags_ms.append(int(lag * 1000))
                    del self.stats.lags_ms[:-1000]
                await self.speaker.play(wav, self.id, a.number)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.stats.failed += 1
                self.health.degraded("C", str(e)[:200], self.stats.metrics(len(self.queue)))
                self.speaking = None
                continue
            self.speaking = None
            self.stats.spoken += 1
            a.times -= 1
            a.said += 1
            if a.times > 0:
                if any(q.window == a.window for q in self.queue):
                    self.stats.superseded += 1  # a newer call for this window is waiting
                elif len(self.queue) >= self.backlog_drop_repeats and self.queue:
                    self.stats.dropped_repeats += a.times
                else:
                    self.queue.appendleft(a)  # the repeat follows at once
            self.health.ok("ready", self.stats.metrics(len(self.queue)))


class VoiceDriver:
    name = "voice"

    def __init__(self, rt: HallRuntime, cfg: VoiceConfig, speaker: Speaker | dict[str, Speaker],
                 cache_dir: Path, *, max_lag_s: float | None = None) -> None:
        self.rt = rt
        self.cfg = cfg
        synth = Synth(cache_dir, cfg.voice, cfg.speed)
        speakers = speaker if isinstance(speaker, dict) else {z.id: speaker for z in cfg.zones}
        self.zones = [VoiceZone(rt, z.id, z.windows, synth, speakers[z.id], repeat=cfg.repeat,
                                backlog_drop_repeats=cfg.backlog_drop_repeats,
                                max_lag_s=cfg.max_lag_seconds if max_lag_s is None
                                else max_lag_s) for z in cfg.zones]
        self.by_window = {w: z for z in self.zones for w in z.windows}
        self._unsub: Any = None

    async def start(self) -> None:
        for z in self.zones:
            await z.start()
        self._unsub = self.rt.bus.subscribe(self.name, self._on_event)

    async def stop(self) -> None:
        if self._unsub:
            self._unsub()
        for z in self.zones:
            await z.stop()

    def _on_event(self, env: dict[str, Any]) -> None:
        if env["type"] not in ("ticket.called", "ticket.recalled"):
            return
        d = env["data"]
        z = self.by_window.get(d["window"])
        if z is not None:
            z.announce(d["number"], d["window"])
