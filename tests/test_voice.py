"""Voice: real espeak-ng Mandarin WAVs checked with sox; the zone queue's rules under load."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from drivers.protocols import keypad as kp
from drivers.sim.harness import MONDAY_0900, example_config, running_hall
from drivers.voice import VoiceDriver, WavSink, number_words, sentence, ticket_words
from edge.clock import FakeClock
from edge.config.calling_devices import VoiceConfig
from edge.runtime import HallRuntime

needs_audio_tools = pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("sox")),
    reason="espeak-ng and sox are system packages (make test installs them)")


def sox_stat(wav: Path) -> dict[str, float]:
    out = subprocess.run(["sox", str(wav), "-n", "stat"], capture_output=True, text=True,
                         check=True).stderr
    stats = {}
    for line in out.splitlines():
        m = re.match(r"^([A-Za-z ()]+):\s+(-?[\d.]+)", line)
        if m:
            stats[m.group(1).strip()] = float(m.group(2))
    return stats


def test_numbers_read_the_way_halls_read_them() -> None:
    assert ticket_words("A023") == "A 零二三"
    assert ticket_words("E100") == "E 一零零"
    assert [number_words(n) for n in (5, 10, 12, 20, 105, 110)] == \
        ["五", "十", "十二", "二十", "一百零五", "一百一十"]
    assert sentence("A023", 5) == "请 A 零二三 号到 五 号窗口办理"


@needs_audio_tools
def test_espeak_sentence_is_audible_and_plausibly_long(tmp_path: Path) -> None:
    from drivers.voice import Synth

    async def go() -> Path:
        return await Synth(tmp_path, "cmn", 175).wav(sentence("A023", 5))

    wav = asyncio.run(go())
    s = sox_stat(wav)
    assert 2.0 <= s["Length (seconds)"] <= 8.0, s
    assert s["RMS     amplitude"] > 0.01, s  # not silence
    assert s["Maximum amplitude"] > 0.2, s


def _voice_runtime(tmp_path: Path) -> HallRuntime:
    rt = HallRuntime.open(example_config(), tmp_path / "data", clock=FakeClock(MONDAY_0900))
    rt.tick()
    return rt


def _driver(rt: HallRuntime, tmp_path: Path, *, repeat: int = 2, backlog: int = 2,
            scale: float = 0.02, max_lag: float = 60.0) -> tuple[VoiceDriver, WavSink]:
    cfg = VoiceConfig.model_validate({
        "repeat": repeat, "backlog_drop_repeats": backlog, "zones": [
            {"id": "east", "windows": [1, 2, 3, 4, 5, 6, 7]},
            {"id": "west", "windows": [8, 9, 10, 11, 12, 13, 14]}]})
    sink = WavSink(tmp_path / "voice", time_scale=scale)
    return VoiceDriver(rt, cfg, sink, tmp_path / "cache", max_lag_s=max_lag), sink


def _call(rt: HallRuntime, service: str, window: int, staff: str) -> str:
    rt.execute(lambda h: h.issue(service))
    if rt.hall.windows[window].staff is None:
        rt.execute(lambda h: (None, h.login(staff, window)))
    cur = rt.hall.current_ticket(window)
    if cur is not None:
        rt.execute(lambda h: (None, h.no_show(window)))
    t = rt.execute(lambda h: h.call_next(window))
    assert t is not None
    return t.number


@needs_audio_tools
def test_queue_never_cuts_a_call_and_repeats(tmp_path: Path) -> None:
    async def go() -> None:
        rt = _voice_runtime(tmp_path)
        drv, sink = _driver(rt, tmp_path, repeat=2, backlog=5)
        await drv.start()
        a = _call(rt, "SHMS", 1, "S001")
        b = _call(rt, "ZCDJ", 3, "S003")
        await drv.zones[0].idle(30)
        labels = [p[1] for p in sink.played]
        assert labels == [a, a, b, b]  # in order, each twice, the repeat right after
        for (_, _, _, _, end), (_, _, _, start, _) in zip(sink.played, sink.played[1:],
                                                          strict=False):
            assert start >= end  # one at a time: nothing cut off
        assert sox_stat(sink.played[0][2])["RMS     amplitude"] > 0.01
        await drv.stop()
        rt.close()

    asyncio.run(go())


@needs_audio_tools
def test_backlog_drops_repeats_first_and_supersedes(tmp_path: Path) -> None:
    async def go() -> None:
        rt = _voice_runtime(tmp_path)
        drv, sink = _driver(rt, tmp_path, repeat=2, backlog=2)
        await drv.start()
        numbers = [_call(rt, "SHMS", w, s) for w, s in ((1, "S001"), (2, "S002"))]
        numbers += [_call(rt, "ZCDJ", w, s) for w, s in ((3, "S003"), (4, "S004"))]
        numbers.append(_call(rt, "TZJS", 6, "S006"))
        z = drv.zones[0]
        await z.idle(60)
        labels = [p[1] for p in sink.played]
        assert sorted(set(labels)) == sorted(numbers)  # everyone is called at least once
        assert z.stats.dropped_repeats >= 3
        assert z.stats.skipped_lag == 0
        # A recall while the first saying is still queued replaces it (one entry per window).
        before = z.stats.superseded
        z.announce("A099", 1)
        z.announce("A099", 1)
        assert z.stats.superseded == before + 1
        await z.idle(30)
        await drv.stop()
        rt.close()

    asyncio.run(go())


@needs_audio_tools
def test_lag_bound_skips_and_counts(tmp_path: Path) -> None:
    async def go() -> None:
        rt = _voice_runtime(tmp_path)
        # Each clip "plays" about a second; anything starting 1.5 s after its board is skipped.
        drv, _sink = _driver(rt, tmp_path, repeat=1, backlog=10, scale=0.25, max_lag=1.5)
        await drv.start()
        z = drv.zones[1]
        calls = [(f"E{i + 1:03d}", w) for i, w in enumerate((8, 9, 10, 11, 12, 13))]
        for number, w in calls:  # synthesis done beforehand: only the queue makes lag here
            await z.synth.wav(sentence(number, w))
        for number, w in calls:
            z.announce(number, w)
        await z.idle(60)
        st = z.stats
        assert st.spoken + st.skipped_lag == 6
        assert st.spoken >= 1 and st.skipped_lag >= 3
        assert all(lag <= 1500 for lag in st.lags_ms)
        assert rt.health.current["voice-west"].metrics["skipped_lag"] == st.skipped_lag
        await drv.stop()
        rt.close()

    asyncio.run(go())


def test_failing_audio_output_is_grade_c_and_recovers(tmp_path: Path) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.fail = True
            self.played: list[str] = []

        async def play(self, wav: Path, zone: str, label: str) -> None:
            if self.fail:
                raise RuntimeError("aplay: audio open error: device busy")
            self.played.append(label)

    async def go() -> None:
        rt = _voice_runtime(tmp_path)
        cfg = VoiceConfig.model_validate({"repeat": 1, "zones": [{"id": "all",
                                                                  "windows": [1, 2]}]})
        spk = Flaky()
        drv = VoiceDriver(rt, cfg, spk, tmp_path / "cache")
        z = drv.zones[0]
        # Synthesis is real when espeak-ng is there; without it the zone says so (grade C).
        await drv.start()
        z.announce("A001", 1)
        await z.idle(30)
        h = rt.health.current["voice-all"]
        assert h.grade == "C"
        if shutil.which("espeak-ng"):
            assert "device busy" in h.detail
            spk.fail = False
            z.announce("A002", 2)
            await z.idle(30)
            assert spk.played == ["A002"]
            assert rt.health.current["voice-all"].grade is None
        await drv.stop()
        rt.close()

    asyncio.run(go())


@needs_audio_tools
def test_keypad_call_queues_an_announcement_in_its_zone(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_hall(tmp_path) as hall:
            await hall.take_ticket("GA")
            pads = hall.keypads
            assert await pads.key(9, kp.Func.KEY_LOGIN, b"S009:8009") == kp.AckStatus.OK
            assert await pads.key(9, kp.Func.KEY_CALL) == kp.AckStatus.OK
            wav_dir = hall.ctx.data_dir / "voice" / "hall-west"
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while loop.time() < end and not list(wav_dir.glob("*-E001.wav")):
                await asyncio.sleep(0.05)
            files = list(wav_dir.glob("*-E001.wav"))
            assert files, "the announcement was not spoken to the zone's output"
            assert sox_stat(files[0])["RMS     amplitude"] > 0.01
            assert not (hall.ctx.data_dir / "voice" / "hall-east").exists()

    asyncio.run(go())
