# Two commands for a new user: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= etc/facewatchd.toml
EXTRAS := mqtt,awsiot,aws,systemd,dev

.PHONY: run test venv servers bench clean

$(BIN)/facewatchd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

venv: $(BIN)/facewatchd

run: venv
	$(BIN)/facewatchd run --config $(CONFIG)

# Test servers: mosquitto (Debian) is started by the tests themselves on free loopback ports;
# moto and our Rekognition-compatible server run in-process. This only makes sure the binary exists.
servers:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
		SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mosquitto >/dev/null; }

test: venv servers
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/throughput.py samples/short_hamilton_clip.mp4

clean:
	rm -rf $(VENV) .state build *.egg-info
