#!/bin/sh
# Remove hallbox's program, unit and udev rules. Keeps the config ($SYSCONFDIR), the data
# ($STATEDIR: database, backups) and the user, so a reinstall carries on where it stopped.
set -eu

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/hallbox}
SYSCONFDIR=${SYSCONFDIR:-/etc/hallbox}
STATEDIR=${STATEDIR:-/var/lib/hallbox}
UNITDIR=${UNITDIR:-/etc/systemd/system}
UDEVDIR=${UDEVDIR:-/etc/udev/rules.d}

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now hallbox.service 2>/dev/null || true
fi
BINDIR=${BINDIR:-/usr/local/bin}
rm -f "$DESTDIR$UNITDIR/hallbox.service" "$DESTDIR$UDEVDIR/99-hallbox.rules" \
    "$DESTDIR$BINDIR/hallbox"
rm -rf "$DESTDIR$PREFIX/venv"
rmdir "$DESTDIR$PREFIX" 2>/dev/null || true
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    command -v udevadm >/dev/null && udevadm control --reload || true
fi
echo "hallbox uninstalled; kept: $SYSCONFDIR (config), $STATEDIR (database, backups), user hallbox"
echo "to remove those too: rm -rf $SYSCONFDIR $STATEDIR; userdel hallbox"
