#!/bin/sh
# Install hallbox as a supervised service: user, directories, venv, unit, udev rules, config.
# Idempotent: run it again to upgrade; the config and the data are never overwritten.
#
#   sudo make install                      # from a checkout: builds the wheel first
#   sudo WHEEL=hallbox-x.y.z-py3-none-any.whl scripts/install.sh
#
# DESTDIR=/some/root installs into that tree instead of / (packaging, tests): no user is created
# (it is reported as skipped), nothing is chowned, systemd and udev are not reloaded. The venv
# is then made at $DESTDIR$PREFIX/venv and runs from there.
set -eu

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/hallbox}
SYSCONFDIR=${SYSCONFDIR:-/etc/hallbox}
STATEDIR=${STATEDIR:-/var/lib/hallbox}
UNITDIR=${UNITDIR:-/etc/systemd/system}
UDEVDIR=${UDEVDIR:-/etc/udev/rules.d}
PYTHON=${PYTHON:-python3}
HALLBOX_USER=${HALLBOX_USER:-hallbox}
PIP_ARGS=${PIP_ARGS:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WHEEL=${WHEEL:-}

say() { printf 'hallbox install: %s\n' "$*"; }

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    echo "run as root (sudo make install), or set DESTDIR to install into a directory" >&2
    exit 1
fi

# 1. The wheel: given, or built from this checkout.
if [ -z "$WHEEL" ]; then
    dist=$(mktemp -d)
    trap 'rm -rf "$dist"' EXIT
    "$PYTHON" -m pip wheel -q --no-deps -w "$dist" "$HERE" >/dev/null
    WHEEL=$(ls "$dist"/hallbox-*.whl)
fi
[ -f "$WHEEL" ] || { echo "no wheel at $WHEEL" >&2; exit 1; }

# 2. The service user: a system account, no login, in the device groups.
if [ -n "$DESTDIR" ]; then
    say "user $HALLBOX_USER: skipped under DESTDIR (create it on the target: useradd --system)"
elif id "$HALLBOX_USER" >/dev/null 2>&1; then
    say "user $HALLBOX_USER exists"
else
    useradd --system --user-group --home-dir "$STATEDIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "hallbox service" "$HALLBOX_USER"
    say "user $HALLBOX_USER created"
fi
if [ -z "$DESTDIR" ]; then
    for g in dialout lp audio plugdev; do
        if getent group "$g" >/dev/null; then usermod -a -G "$g" "$HALLBOX_USER"; fi
    done
fi

# 3. Directories: config readable by the service only, data owned by it.
install -d -m 0755 "$DESTDIR$PREFIX"
install -d -m 0750 "$DESTDIR$SYSCONFDIR" "$DESTDIR$STATEDIR" "$DESTDIR$STATEDIR/backups"
if [ -z "$DESTDIR" ]; then
    chown root:"$HALLBOX_USER" "$DESTDIR$SYSCONFDIR"
    chown "$HALLBOX_USER":"$HALLBOX_USER" "$DESTDIR$STATEDIR" "$DESTDIR$STATEDIR/backups"
fi

# 4. The venv, and the wheel in it (again on upgrade).
VENV="$DESTDIR$PREFIX/venv"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q --disable-pip-version-check $PIP_ARGS "$WHEEL"
# The same version number rebuilt is still a new program: put this wheel's files in place.
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q --disable-pip-version-check $PIP_ARGS --no-deps \
    --force-reinstall "$WHEEL"
say "installed $(basename "$WHEEL") into $VENV"

# The command on the PATH for people: hallbox doctor, backup, hash-pin ...
BINDIR=${BINDIR:-/usr/local/bin}
install -d -m 0755 "$DESTDIR$BINDIR"
ln -sfn "$PREFIX/venv/bin/hallbox" "$DESTDIR$BINDIR/hallbox"

# 5. The example config, only when there is no config yet.
if [ -e "$DESTDIR$SYSCONFDIR/hall.toml" ]; then
    say "config $SYSCONFDIR/hall.toml kept"
else
    "$VENV/bin/hallbox" example-config > "$DESTDIR$SYSCONFDIR/hall.toml"
    chmod 0640 "$DESTDIR$SYSCONFDIR/hall.toml"
    [ -n "$DESTDIR" ] || chown root:"$HALLBOX_USER" "$DESTDIR$SYSCONFDIR/hall.toml"
    say "config $SYSCONFDIR/hall.toml written from the example: edit it (README, Installing)"
fi

# 6. The unit (ExecStart pointed at this PREFIX) and the udev rules.
install -d -m 0755 "$DESTDIR$UNITDIR" "$DESTDIR$UDEVDIR"
sed -e "s|/opt/hallbox/venv|$PREFIX/venv|g" -e "s|/etc/hallbox|$SYSCONFDIR|g" \
    -e "s|/var/lib/hallbox|$STATEDIR|g" "$HERE/systemd/hallbox.service" \
    > "$DESTDIR$UNITDIR/hallbox.service"
chmod 0644 "$DESTDIR$UNITDIR/hallbox.service"
install -m 0644 "$HERE/systemd/99-hallbox.rules" "$DESTDIR$UDEVDIR/99-hallbox.rules"
say "unit $UNITDIR/hallbox.service, rules $UDEVDIR/99-hallbox.rules"

# 7. Tell systemd and udev (a real install on a running system only).
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    command -v udevadm >/dev/null && udevadm control --reload && udevadm trigger \
        --subsystem-match=tty --subsystem-match=usb || true
    say "next: edit $SYSCONFDIR/hall.toml, then: systemctl enable --now hallbox; hallbox doctor"
fi
