"""The install path as far as a container allows: a wheel built from the checkout, installed by
scripts/install.sh into a temporary root (DESTDIR: no user is created, nothing chowned, systemd
and udev not reloaded), run from that venv outside the checkout; the unit verified by
systemd-analyze; a second install keeps config and data; uninstall keeps them too.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.ops_fixtures import ROOT, BoxProcess, NotifySocket

MANAGER = {"Authorization": "Bearer demo-manager-token"}


@dataclass
class Installed:
    root: Path
    wheel: Path
    work: Path

    @property
    def venv(self) -> Path:
        return self.root / "opt/hallbox/venv"

    @property
    def config(self) -> Path:
        return self.root / "etc/hallbox/hall.toml"

    @property
    def data(self) -> Path:
        return self.root / "var/lib/hallbox"


def install(root: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESTDIR": str(root), "WHEEL": str(wheel), "PYTHON": sys.executable}
    return subprocess.run([str(ROOT / "scripts/install.sh")], env=env, capture_output=True,
                          text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("install")
    dist = work / "dist"
    # A wheel as `make wheel` builds it (isolated build, from the checkout).
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                        str(ROOT)], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next(dist.glob("hallbox-*.whl"))
    root = work / "root"
    r = install(root, wheel)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "skipped under DESTDIR" in r.stdout
    yield Installed(root, wheel, work)


def test_wheel_carries_pages_schemas_and_examples(installed: Installed) -> None:
    import zipfile

    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for n in ("kiosk_ui/index.html", "kiosk_ui/evaluator.html", "edge/schemas/envelope.json",
              "edge/schemas/events/ticket.issued.json", "edge/examples/hall.example.toml",
              "edge/examples/mqtt.example.toml"):
        assert n in names, n
    # The examples are the files, not the repo's symlinks.
    example = zipfile.ZipFile(installed.wheel).read("edge/examples/hall.example.toml")
    assert example == (ROOT / "config/hall.example.toml").read_bytes()


def test_wheel_carries_every_file_under_the_pages(installed: Installed) -> None:
    # The pages and the front-end assets installed next to them (kiosk_ui/node_modules/...):
    # everything but pyproject's exclusions (source maps, npm sources and types) travels.
    import fnmatch
    import tomllib
    import zipfile

    names = set(zipfile.ZipFile(installed.wheel).namelist())
    excluded = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "exclude-package-data"]["kiosk_ui"]
    assets = [p.relative_to(ROOT).as_posix() for p in (ROOT / "kiosk_ui").rglob("*")
              if p.is_file()]
    wanted = [a for a in assets
              if not any(fnmatch.fnmatch(a, f"kiosk_ui/{x}") for x in excluded)]
    assert "kiosk_ui/index.html" in wanted
    assert [a for a in wanted if a not in names] == []
    # What no page loads stays out of the wheel.
    assert not [n for n in names if n.endswith(".map") or "/echarts/lib/" in n]


def test_layout_of_the_install(installed: Installed) -> None:
    r = installed.root
    for p in ("etc/systemd/system/hallbox.service", "etc/udev/rules.d/99-hallbox.rules",
              "opt/hallbox/venv/bin/hallbox", "var/lib/hallbox/backups"):
        assert (r / p).exists(), p
    assert installed.config.read_text() == (ROOT / "config/hall.example.toml").read_text()
    assert stat.S_IMODE(installed.config.stat().st_mode) == 0o640
    assert stat.S_IMODE((r / "etc/hallbox").stat().st_mode) == 0o750
    unit = (r / "etc/systemd/system/hallbox.service").read_text()
    assert "ExecStart=/opt/hallbox/venv/bin/hallbox run --config /etc/hallbox/hall.toml" in unit
    assert os.readlink(r / "usr/local/bin/hallbox") == "/opt/hallbox/venv/bin/hallbox"


def test_runs_from_the_installed_wheel_outside_the_checkout(installed: Installed,
                                                            tmp_path: Path) -> None:
    py = installed.venv / "bin/python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [str(py), "-c", "import edge, kiosk_ui, edge.resources as r; "
         "print(edge.__file__); print(kiosk_ui.__file__); print(r.ui_dir())"],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout.split()
    for path in where:
        assert path.startswith(str(installed.venv)), where  # not the checkout
    assert str(ROOT) not in "".join(where)
    ns = NotifySocket()
    try:
        box = BoxProcess(installed.config, tmp_path / "data",
                         exe=[str(installed.venv / "bin/hallbox")], cwd=tmp_path,
                         env={**env, "NOTIFY_SOCKET": str(ns.path)})
        box.start()
        try:
            ns.wait_for("READY=1", 30)
            page = httpx.get(f"{box.url}/", timeout=10)
            assert page.status_code == 200 and "<html" in page.text.lower()
            assert httpx.get(f"{box.url}/ui/evaluator.html", timeout=10).status_code == 200
            health = httpx.get(f"{box.url}/api/v1/health", headers=MANAGER, timeout=10)
            assert health.status_code == 200 and "devices" in health.json()
            t = httpx.post(f"{box.url}/api/v1/tickets", json={"service": "SHMS"}, timeout=10,
                           headers={"Authorization": "Bearer demo-kiosk-token"})
            assert t.status_code == 201, t.text
        finally:
            assert box.stop() == 0
    finally:
        ns.close()
    # The installed CLI verifies the journal it wrote.
    v = subprocess.run([str(installed.venv / "bin/hallbox"), "verify", str(tmp_path / "data")],
                       capture_output=True, text=True, env=env, check=False)
    assert v.returncode == 0 and "intact" in v.stdout, v.stdout + v.stderr


def verify_unit(unit_text: str, exec_path: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    # systemd-analyze checks that ExecStart exists: point it at the venv under the temp root;
    # every other line is verified as installed.
    unit = tmp / "hallbox.service"
    unit.write_text(unit_text.replace("/opt/hallbox/venv/bin/hallbox", str(exec_path)))
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_systemd_analyze_verify(installed: Installed, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing (apt package systemd, in APT_PACKAGES)")
    unit_text = (installed.root / "etc/systemd/system/hallbox.service").read_text()
    r = verify_unit(unit_text, installed.venv / "bin/hallbox", tmp_path)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    for key in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StartLimitBurst=",
                "StartLimitIntervalSec=", "StateDirectory=hallbox", "LimitNOFILE=",
                "ProtectSystem=strict", "NoNewPrivileges=true", "PrivateTmp=true",
                "ProtectHome=true", "DeviceAllow=char-ttyUSB rw", "SupplementaryGroups=dialout"):
        assert key in unit_text, key
    assert "\nPrivateDevices=" not in unit_text
    # The check can fail: a misspelt key and a bad value are reported.
    bad = unit_text.replace("Restart=on-failure", "Restart=sometimes\nProtectSytem=strict")
    r = verify_unit(bad, installed.venv / "bin/hallbox", tmp_path)
    assert "ProtectSytem" in r.stderr and "sometimes" in r.stderr


def test_second_install_keeps_config_and_data_then_uninstall_keeps_them(
        installed: Installed) -> None:
    installed.config.write_text(installed.config.read_text() + "\n# edited by the hall\n")
    (installed.data / "hallbox.db").write_bytes(b"the hall's data")
    r = install(installed.root, installed.wheel)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "config /etc/hallbox/hall.toml kept" in r.stdout
    assert installed.config.read_text().endswith("# edited by the hall\n")
    assert (installed.data / "hallbox.db").read_bytes() == b"the hall's data"
    env = {**os.environ, "DESTDIR": str(installed.root)}
    r = subprocess.run([str(ROOT / "scripts/uninstall.sh")], env=env, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert not (installed.root / "etc/systemd/system/hallbox.service").exists()
    assert not (installed.root / "etc/udev/rules.d/99-hallbox.rules").exists()
    assert not installed.venv.exists()
    assert not (installed.root / "usr/local/bin/hallbox").is_symlink()
    assert installed.config.exists() and (installed.data / "hallbox.db").exists()


ROOT_INSTALL = r"""
set -eu
# Private mounts: what the install writes to /etc, /opt, /var/lib and /usr/local lands in
# overlays under $OV and vanishes with this namespace; the machine is not changed.
for d in etc opt var/lib usr/local; do
    mkdir -p "$OV/u/$d" "$OV/w/$d"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$OV/u/$d,workdir=$OV/w/$d" "/$d"
done
WHEEL="$WHEEL" PYTHON=/usr/bin/python3 "$SRC/scripts/install.sh"
WHEEL="$WHEEL" PYTHON=/usr/bin/python3 "$SRC/scripts/install.sh"   # again: idempotent
# The test's own port, and a hall open around the clock so a ticket can be taken now. The
# example's cameras and network printer are hall LAN addresses: moved to loopback (nothing
# listens there), so the box contacts no other host.
sed -i -e "s/^port = 8080/port = $PORT/" -e 's/^hours = .*/hours = ["00:00-24:00"]/' \
    -e 's/^days = .*/days = [1, 2, 3, 4, 5, 6, 7]/' \
    -e 's/192\.168\.[0-9]*\.[0-9]*/127.0.0.1/g' /etc/hallbox/hall.toml
if grep -nE '([0-9]{1,3}\.){3}[0-9]{1,3}' /etc/hallbox/hall.toml | grep -v '127\.0\.0\.1'; then
    echo "a non-loopback address is left in the config"; exit 1
fi
echo "USER $(id -un hallbox) $(id -Gn hallbox)"
echo "STAT $(stat -c '%U:%G %a %n' /etc/hallbox /etc/hallbox/hall.toml /var/lib/hallbox \
    /var/lib/hallbox/backups | tr '\n' ' ')"
echo "LINK $(readlink /usr/local/bin/hallbox)"
echo INSTALLED
# What systemd's ExecStart= runs, as the unit's User=, Group= and groups.
cmd=$(sed -n 's/^ExecStart=//p' /etc/systemd/system/hallbox.service)
exec setpriv --reuid=hallbox --regid=hallbox --init-groups \
    env -i PATH=/usr/bin:/bin NOTIFY_SOCKET="$NOTIFY" HOME=/var/lib/hallbox $cmd
"""


def test_root_install_in_a_private_mount_namespace(installed: Installed,
                                                    tmp_path: Path) -> None:
    """The real path (no DESTDIR): user created, ownership and modes set, twice, with Debian's
    python3; then the unit's ExecStart run as the unit's user. Only systemd itself (PID 1)
    is missing in a container."""
    if shutil.which("unshare") is None or not Path("/usr/bin/python3").exists():
        pytest.skip("needs unshare and Debian's python3")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mkdir -p {tmp_path}/p/u "
                            f"{tmp_path}/p/w && mount -t overlay overlay -o lowerdir=/etc,"
                            f"upperdir={tmp_path}/p/u,workdir={tmp_path}/p/w /etc"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace with overlayfs here: {probe.stderr[:200]}")
    from tests.ops_fixtures import free_port

    had_user, had_opt = _has_user("hallbox"), Path("/opt/hallbox").exists()
    port = free_port()
    ns = NotifySocket()
    os.chmod(ns.dir, 0o755)
    os.chmod(ns.path, 0o777)  # the box runs as hallbox, not root
    script = tmp_path / "root-install.sh"
    script.write_text(ROOT_INSTALL)
    env = {**os.environ, "OV": str(tmp_path / "ov"), "WHEEL": str(installed.wheel),
           "SRC": str(ROOT), "PORT": str(port), "NOTIFY": str(ns.path)}
    proc = subprocess.Popen(["unshare", "-m", "bash", str(script)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line.rstrip())
            if line.strip() == "INSTALLED":
                break
        assert out and out[-1] == "INSTALLED", "\n".join(out[-30:])
        facts = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in out
                 if ln.split(" ", 1)[0] in ("USER", "STAT", "LINK")}
        assert facts["USER"].startswith("hallbox hallbox")
        assert "dialout" in facts["USER"].split()
        assert "root:hallbox 750 /etc/hallbox " in facts["STAT"]
        assert "root:hallbox 640 /etc/hallbox/hall.toml" in facts["STAT"]
        assert "hallbox:hallbox 750 /var/lib/hallbox " in facts["STAT"]
        assert facts["LINK"] == "/opt/hallbox/venv/bin/hallbox"
        assert sum("user hallbox created" in ln for ln in out) == 1
        assert any("user hallbox exists" in ln for ln in out)
        assert any("config /etc/hallbox/hall.toml kept" in ln for ln in out)
        ns.wait_for("READY=1", 60)
        base = f"http://127.0.0.1:{port}"
        assert "<html" in httpx.get(f"{base}/", timeout=10).text.lower()
        assert httpx.get(f"{base}/api/v1/health", headers=MANAGER, timeout=10).status_code \
            == 200
        t = httpx.post(f"{base}/api/v1/tickets", json={"service": "SHMS"}, timeout=10,
                       headers={"Authorization": "Bearer demo-kiosk-token"})
        assert t.status_code == 201, t.text
        os.killpg(proc.pid, 15)
        ns.wait_for("STOPPING=1", 20)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(10)
        ns.close()
    # Nothing of it reached the machine itself.
    assert had_user == _has_user("hallbox") and had_opt == Path("/opt/hallbox").exists()
    assert (tmp_path / "ov/u/etc/hallbox/hall.toml").exists()  # it went to the overlay


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
