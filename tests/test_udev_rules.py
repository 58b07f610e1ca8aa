"""systemd/99-hallbox.rules: parsed by the real udev, and self-contained.

Debian bookworm ships udev 252, which has no `udevadm verify` (systemd >= 254). So the rules are
loaded by `udevadm test` in a private mount namespace: our file alone in /etc/udev/rules.d, a
private /dev and /run/udev so nothing on the machine changes, and every complaint udev prints
about our file fails the test. A static check adds what udev cannot: every variable the rules
read is set by the rules, by a builtin they import, or by the kernel.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "systemd" / "99-hallbox.rules"
# What the builtins we import set, and what the kernel/udev core provides.
BUILTIN_SETS = {
    "usb_id": {"ID_VENDOR_ID", "ID_MODEL_ID", "ID_SERIAL_SHORT", "ID_SERIAL",
               "ID_USB_INTERFACE_NUM", "ID_USB_INTERFACES", "ID_USB_DRIVER", "ID_VENDOR",
               "ID_MODEL", "ID_REVISION", "ID_TYPE", "ID_BUS"},
    "path_id": {"ID_PATH", "ID_PATH_TAG"},
}
KERNEL_SETS = {"DEVTYPE", "SUBSYSTEM", "DEVNAME", "DEVPATH", "ACTION", "MAJOR", "MINOR"}


def udevadm_test(rules_dir: Path, syspath: str = "/sys/class/tty/tty0") -> str:
    if shutil.which("udevadm") is None or shutil.which("unshare") is None:
        pytest.skip("udevadm (apt package udev) or unshare missing")
    if not Path(syspath).exists():
        pytest.skip(f"{syspath} not present in this container")
    script = (f"mount --bind {rules_dir} /etc/udev/rules.d && mkdir -p /run/udev && "
              "mount -t tmpfs none /run/udev && mount -t tmpfs none /dev && "
              f"udevadm test --action=add {syspath}")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                       timeout=60, check=False)
    if "mount" in r.stderr and ("Permission denied" in r.stderr
                                or "Operation not permitted" in r.stderr):
        pytest.skip("no mount namespace here (needs CAP_SYS_ADMIN): " + r.stderr[:200])
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout + r.stderr


def complaints(output: str, name: str) -> list[str]:
    """Lines where udev reports a problem in our file (it prefixes them with file:line)."""
    return [ln for ln in output.splitlines() if re.match(rf"\S*/{re.escape(name)}:\d+ ", ln)]


def test_udev_loads_the_rules_without_a_complaint(tmp_path: Path) -> None:
    shutil.copy(RULES, tmp_path / RULES.name)
    out = udevadm_test(tmp_path)
    assert f"Reading rules file: /etc/udev/rules.d/{RULES.name}" in out
    assert complaints(out, RULES.name) == []


def test_the_role_templates_load_too(tmp_path: Path) -> None:
    # The commented per-box role lines, as an installer uncomments them.
    text = RULES.read_text().replace("#ENV{ID_PATH_TAG}", "ENV{ID_PATH_TAG}")
    assert text != RULES.read_text()
    (tmp_path / RULES.name).write_text(text)
    out = udevadm_test(tmp_path)
    assert complaints(out, RULES.name) == []


def test_udev_complains_about_a_broken_rule(tmp_path: Path) -> None:
    # The check above can fail: the same run reports a bad key in our file.
    (tmp_path / RULES.name).write_text(
        RULES.read_text() + 'SUBSYSTEM=="tty", ATTRS{idVendor}=="1a86", BOGUS="1"\n')
    out = udevadm_test(tmp_path)
    assert complaints(out, RULES.name), out[-1500:]


def _rules() -> list[str]:
    return [ln.strip() for ln in RULES.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def test_every_variable_read_is_set_by_the_rules_or_a_builtin() -> None:
    lines = _rules()
    assigned: set[str] = set()
    read: set[str] = set()
    imported: set[str] = set()
    for ln in lines:
        imported |= set(re.findall(r'IMPORT\{builtin\}="(\w+)', ln))
        assigned |= set(re.findall(r'ENV\{(\w+)\}="', ln))
        read |= set(re.findall(r'ENV\{(\w+)\}[!=]=', ln))
        read |= set(re.findall(r"\$env\{(\w+)\}", ln))
    provided = assigned | KERNEL_SETS
    for b in imported:
        provided |= BUILTIN_SETS[b]
    assert read - provided == set(), f"read but never set: {read - provided}"
    assert "HALLBOX_ROLE" in read and "HALLBOX_KIND" in assigned


def test_labels_gotos_and_the_names() -> None:
    text = "\n".join(_rules())
    gotos = set(re.findall(r'GOTO="(\w+)"', text))
    labels = set(re.findall(r'LABEL="(\w+)"', text))
    assert gotos <= labels
    # Every name is under /dev/hallbox/; ModemManager stays away from every device we name.
    links = re.findall(r'SYMLINK\+="([^"]+)"', text)
    assert links and all(link.startswith("hallbox/") for link in links)
    assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in text
    # CH340 (1a86:7523) has no serial number: it gets a name by physical port.
    assert 'ENV{ID_VENDOR_ID}=="1a86", ENV{ID_MODEL_ID}=="7523|5523"' in text
    assert "port-$env{ID_PATH_TAG}" in text
