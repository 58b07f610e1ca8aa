# hallbox: `make run` starts a simulated hall; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := mosquitto mosquitto-clients ffmpeg chromium fonts-wqy-zenhei espeak-ng sox sqlite3 systemd udev python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base libfaketime \
		gir1.2-gstreamer-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
# The pages' front-end libraries come from npm (make venv); Debian's nodejs brings node.
APT_PACKAGES += nodejs
UI     := kiosk_ui

.PHONY: run test test-long bench soak lint sysdeps venv clean wheel install uninstall

# System packages: installed with apt-get only when one is missing.
.make-sysdeps: Makefile
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

sysdeps: .make-sysdeps

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# The pages' front-end libraries (ECharts, Swagger UI) from npm at the lockfile's versions,
# served by the box itself: nothing third-party is committed, no page needs a CDN.
# --ignore-scripts: no install hooks run (swagger-ui-dist would phone home for analytics).
.make-ui: $(UI)/package.json $(UI)/package-lock.json
	@command -v npm >/dev/null || { echo "installing npm"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	cd $(UI) && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

venv: $(VENV)/.installed .make-ui

# The pages are meant for the hall's LAN (kiosks, boards, tablets): listen on every address;
# `make run HOST=127.0.0.1` keeps the demo on this machine.
HOST ?= 0.0.0.0

run: sysdeps venv
	@echo "hallbox: http://127.0.0.1:8080  (pages: / /staff /board /evaluator /dashboard /docs; demo credentials: config/DEMO-CREDENTIALS.md)"
	$(VENV)/bin/hallbox run --config config/hall.example.toml --sim --ignore-hours --host $(HOST)

test: sysdeps venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-long: sysdeps venv
	$(PY) -m pytest -q -m long

bench: sysdeps venv
	$(PY) -m bench

# The soak (docs/soak.md): a compressed hall day under injected faults, checked for loss.
# Root (a tmpfs and a network namespace). `make soak SOAK_SEED=n` replays a run,
# SOAK_MINUTES sets its length (default 20).
soak: sysdeps venv
	SOAK_SEED="$(SOAK_SEED)" SOAK_MINUTES="$(SOAK_MINUTES)" $(PY) -m bench.soak

# The installable package: the pages with what `venv` installs under kiosk_ui/ (the pages'
# npm assets), the schemas, the examples.
wheel: venv
	rm -rf build dist
	$(PY) -m pip wheel -q --no-deps -w dist .
	@ls dist/*.whl

# A supervised service on this machine (root): user, dirs, venv, unit, udev rules, config.
# DESTDIR=/tmp/root installs into a directory instead (no user, no reload); PREFIX moves the
# program from /opt/hallbox (the unit follows). Idempotent.
install: wheel
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" WHEEL="$$(ls dist/hallbox-*.whl)" PYTHON=$(PYTHON) \
	  scripts/install.sh

# Removes program, unit and rules; keeps the config, the data and the user.
uninstall:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" scripts/uninstall.sh

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .make-sysdeps .make-ui var .pytest_cache .hypothesis build dist $(UI)/node_modules test-artifacts
