"""Keypad/evaluator frames against an independent implementation of their framing.

The keypad frame (drivers/protocols/keypad.py) is the IEC 60870-5-1 FT 1.2 variable-length frame
(68 L L 68 | user data | sum mod 256 | 16) behind a wake-up byte, the frame M-Bus (EN 13757-2)
also uses. pymeterbus (PyPI), an M-Bus implementation written without this project, parses and
builds such frames when the user data is 3 bytes (its "control frame": C, A, CI), which is the
shape of our rating and rate-done frames: ADDR, FUNC, one data byte. The FUNC codes themselves
have no independent implementation (see the codec's docstring); nor does the BX-5 layout
(drivers/protocols/bx5.py), whose CRC is checked against the catalogue value elsewhere.
"""

from __future__ import annotations

import meterbus
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meterbus.exceptions import MBusFrameCRCError
from meterbus.telegram_control import TelegramControl

from drivers.protocols import keypad


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 254), st.sampled_from([keypad.Func.RATING, keypad.Func.RATE_DONE]),
       st.integers(0, 255))
def test_our_three_byte_frames_are_valid_ft12_frames_for_pymeterbus(address, func, value):
    raw = keypad.encode(keypad.KeypadFrame(address, func, bytes([value])))
    assert raw[0] == keypad.WAKE
    t = meterbus.load(raw[1:])  # the wake-up byte is not part of the FT 1.2 frame
    assert isinstance(t, TelegramControl)
    assert (t.header.cField.parts[0], t.header.aField.parts[0]) == (address, func)
    assert t.body.bodyHeader.ci_field.parts[0] == value
    assert t.header.crcField.parts[0] == t.compute_crc() == raw[-2]
    assert t.header.stopField.parts[0] == 0x16


def test_pymeterbus_refuses_our_frame_with_a_wrong_sum():
    raw = bytearray(keypad.encode(keypad.KeypadFrame(7, keypad.Func.RATING, b"\x02")))
    raw[-2] ^= 0x01
    with pytest.raises(MBusFrameCRCError):
        meterbus.load(bytes(raw[1:]))
    dec = keypad.KeypadDecoder()
    assert dec.feed(bytes(raw)) == [] and dec.stats.bad_checksum == 1


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.booleans())
def test_frames_pymeterbus_builds_decode_here(c, a, ci, wake):
    t = TelegramControl()
    t.header.cField.parts = [c]
    t.header.aField.parts = [a]
    t.body.bodyHeader.ci_field.parts = [ci]
    raw = bytes(t)
    dec = keypad.KeypadDecoder()
    assert dec.feed((b"\xff" if wake else b"") + raw) == [keypad.KeypadFrame(c, a, bytes([ci]))]
    assert dec.stats.dropped == 0
