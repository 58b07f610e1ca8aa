"""The R30x/AS608 simulator against an independent client: pyfingerprint (PyPI), which speaks
the sensor protocol through pyserial to the simulator's pseudo-terminal.

pyfingerprint was written against real ZhianTec ZFM sensors; its enrol, search, template
up/download, 1:1 compare, random number and system-parameter flows must complete against the
simulator, with the finger placed and lifted by the test, and every packet it sends must pass
our decoder. The test vector of a frame comes from the vendor manual (GenImg, in
tests/test_staff_codecs_fuzz.py); no captured traffic of a real module was found published.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyfingerprint.pyfingerprint import PyFingerprint

from drivers.protocols import r30x
from drivers.protocols.r30x import Instr
from drivers.sim.r30x import R30xSim


class Bench:
    """The simulator's event loop in a thread: pyfingerprint is a blocking client."""

    def __init__(self, sim: R30xSim) -> None:
        self.sim = sim
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(sim.start(), self.loop).result(5)

    def do(self, fn: object, *args: object) -> object:
        """Run fn on the simulator's loop (placing or lifting a finger) and wait for it."""
        async def call() -> object:
            return fn(*args)  # type: ignore
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def bench(tmp_path: Path):
    b = Bench(R30xSim(tmp_path / "fp-w1", capacity=300, templates={3: "S002-thumb"}))
    yield b
    b.close()


def sensor(bench: Bench, password: int = 0) -> PyFingerprint:
    return PyFingerprint(bench.sim.endpoint, 57600, 0xFFFFFFFF, password)


def test_pyfingerprint_enrols_searches_and_moves_templates(bench):
    sim = bench.sim
    f = sensor(bench)
    assert f.verifyPassword()
    assert f.getTemplateCount() == 1
    index = f.getTemplateIndex(0)
    assert len(index) == 256 and [i for i, used in enumerate(index) if used] == [3]
    assert f.getStorageCapacity() == 300

    # Enrol, as pyfingerprint's own example does: image, char 1, lift, image, char 2, model.
    assert not f.readImage()  # nothing on the glass
    bench.do(sim.place_finger, "S001-right-index")
    assert f.readImage()
    f.convertImage(0x01)
    bench.do(sim.lift_finger)
    assert not f.readImage()
    bench.do(sim.place_finger, "S001-right-index")
    assert f.readImage()
    f.convertImage(0x02)
    assert f.compareCharacteristics() > 0
    assert f.createTemplate()
    page = f.storeTemplate()  # first free position, found with ReadIndexTable
    assert page == 0 and sim.templates[0] == "S001-right-index"
    assert f.getTemplateCount() == 2
    assert [i for i, used in enumerate(f.getTemplateIndex(0)) if used] == [0, 3]

    # Search: the same finger is found, another is not.
    assert f.readImage()
    f.convertImage(0x01)
    found, score = f.searchTemplate()
    assert found == 0 and score > 0
    bench.do(sim.place_finger, "stranger")
    assert f.readImage()
    f.convertImage(0x01)
    assert f.searchTemplate() == (-1, -1)

    # UpChar: the character file comes up in DATA…END packets; DownChar puts it back.
    bench.do(sim.place_finger, "S001-right-index")
    assert f.readImage()
    f.convertImage(0x01)
    chars = f.downloadCharacteristics(0x01)
    assert len(chars) == r30x.CHAR_FILE and bytes(chars) == sim.char_file("S001-right-index")
    assert f.uploadCharacteristics(0x02, chars)  # pyfingerprint reads it back and compares
    assert f.compareCharacteristics() > 0

    # LoadChar + Match (1:1): a stored template against the finger in buffer 1.
    assert f.loadTemplate(3, 0x02)
    assert f.compareCharacteristics() == 0
    assert f.loadTemplate(0, 0x02)
    assert f.compareCharacteristics() > 0
    with pytest.raises(Exception, match="could not be read"):
        f.loadTemplate(7, 0x02)  # an empty page

    # A character file from elsewhere (another sensor), stored and then found by search.
    foreign = list(os.urandom(r30x.CHAR_FILE))
    assert f.uploadCharacteristics(0x01, foreign)
    assert f.storeTemplate(5, 0x01) == 5
    assert f.searchTemplate()[0] == 5
    assert f.deleteTemplate(5)
    assert f.searchTemplate() == (-1, -1)

    # GetRandomCode.
    numbers = {f.generateRandomNumber() for _ in range(4)}
    assert len(numbers) > 1 and all(0 <= n < 2**32 for n in numbers)

    # SetSysPara, read back through ReadSysPara.
    f.setSecurityLevel(5)
    assert f.getSecurityLevel() == 5
    f.setBaudRate(115200)
    assert f.getBaudRate() == 115200
    f.setMaxPacketSize(64)
    assert f.getMaxPacketSize() == 64
    assert f.downloadCharacteristics(0x01) == foreign  # now in eight 64-byte packets
    with pytest.raises(ValueError):
        f.setSecurityLevel(9)  # refused by the client before it reaches the wire

    assert sim.decoder.stats.dropped == 0 and sim.decoder.stats.garbage_bytes == 0
    for instr in (Instr.READ_INDEX_TABLE, Instr.MATCH, Instr.LOAD_CHAR, Instr.UP_CHAR,
                  Instr.DOWN_CHAR, Instr.GET_RANDOM_CODE, Instr.SET_SYS_PARA):
        assert instr in sim.commands


def test_pyfingerprint_wrong_password_and_empty_library(bench):
    bench.sim.password = 0x1234
    assert not sensor(bench).verifyPassword()
    f = sensor(bench, 0x1234)
    assert f.verifyPassword()
    assert f.clearDatabase()
    assert f.getTemplateCount() == 0 and not any(f.getTemplateIndex(0))


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 1023), max_size=60), st.integers(0, 3))
def test_index_table_roundtrip(used, page):
    table = r30x.index_table(page, used)
    assert r30x.parse_index_table(page, table) == sorted(
        n for n in used if page * 256 <= n < (page + 1) * 256)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=1200), st.sampled_from(r30x.PACKET_SIZES),
       st.lists(st.integers(1, 64), max_size=8))
def test_data_packets_decode_in_any_chunking(data, size, cuts):
    raw = r30x.data_packets(data, size)
    dec = r30x.R30xDecoder()
    got: list[r30x.R30xPacket] = []
    i = 0
    for c in [*cuts, len(raw)]:
        got += dec.feed(raw[i:i + c])
        i += c
    got += dec.feed(raw[i:])
    assert b"".join(p.payload for p in got) == data
    assert [p.pid for p in got] == [r30x.Pid.DATA] * (len(got) - 1) + [r30x.Pid.END]
    assert all(len(p.payload) <= size for p in got)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=12))
def test_simulator_answers_any_command_without_raising(tmp_path_factory, instr, params):
    sim = R30xSim(tmp_path_factory.getbasetemp() / "fuzz-fp", templates={1: "a"})
    code, results = sim._execute(instr, params)
    assert 0 <= code <= 0xFF
    r30x.ack(code, results)  # and the answer encodes
