# Two commands for a new user: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= etc/facewatchd.toml
EXTRAS := mqtt,awsiot,aws,systemd,dev,torch,analytics,postgres

.PHONY: run review test venv servers ha-venv bench clean

$(BIN)/facewatchd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	# cfn-lint needs aws-sam-translator to read the SAM template. Its loose boto3 range sends pip's resolver
	# into a backtracking dead end against aioboto3's exact pins, and everything it needs is installed by
	# now, so it goes in on its own, without resolution.
	$(BIN)/pip install --quiet --no-deps aws-sam-translator==1.105.0
	touch $@

venv: $(BIN)/facewatchd

run: venv
	$(BIN)/facewatchd run --config $(CONFIG)

# The first hour: the sample clip plays on and the review page is served at http://127.0.0.1:8750 (user
# admin; the password is asked for once). Name the faces there; Ctrl-C stops.
review: venv
	$(BIN)/facewatchd run --config $(CONFIG) --review

# Test servers: mosquitto (Debian) is started by the tests themselves on free loopback ports;
# moto and our Rekognition-compatible server run in-process. This only makes sure the binary exists.
# Chromium (Debian's) is the browser of the review page's tests: Playwright drives it, never downloads one.
# systemd-analyze (Debian's systemd) checks the unit files.
servers:
	@{ command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; } && command -v chromium >/dev/null 2>&1 \
		&& command -v systemd-analyze >/dev/null 2>&1 || { \
		SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mosquitto chromium \
			systemd >/dev/null; }

# Home Assistant for the plugin's tests (tests/plugins/test_homeassistant_real.py), in its own virtualenv: its pins
# clash with ours. The requirements file also pins what HA's loaded integrations need, as HA starts with --skip-pip
# and nothing downloads at test time. HA 2024.3.3 is the newest on Python 3.11.
HA_VENV := .venv-ha
HA_REQUIREMENTS := tests/support/homeassistant-requirements.txt

$(HA_VENV)/bin/hass: $(HA_REQUIREMENTS)
	$(PYTHON) -m venv $(HA_VENV)
	$(HA_VENV)/bin/pip install --quiet --upgrade pip
	$(HA_VENV)/bin/pip install --quiet -r $(HA_REQUIREMENTS)
	touch $@

ha-venv: $(HA_VENV)/bin/hass

test: venv servers ha-venv
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Benchmarks on the shared data sets (never copied into the repo). The bench extra brings dlib for the
# seed workshop's pipeline. bench-smoke: the same scripts on tiny limits, to check they run.
SHARED ?= ../shared
LFW    := $(SHARED)/data/lfw-dev
KNN    := $(SHARED)/data/faces/web-dev-only/face_recognition_examples/knn_examples/train

bench-extras: venv
	$(BIN)/pip install --quiet -e ".[$(EXTRAS),bench]"

bench: bench-extras
	$(BIN)/python bench/accuracy.py --pairs $(LFW)/pairs-dev.txt --images $(LFW)/images
	$(BIN)/python bench/accuracy.py --pairs $(LFW)/pairs-dev.txt --images $(LFW)/images --backend torch --int8
	$(BIN)/python bench/openset.py --images $(LFW)/images --gallery 1000
	$(BIN)/python bench/visits.py --faces $(LFW)/images --min-photos 3 --people 12 --visits 40
	$(BIN)/python bench/visits.py --faces $(KNN) --people 5 --visits 16
	$(BIN)/python bench/throughput.py samples/short_hamilton_clip.mp4
	$(BIN)/python bench/cache_match.py
	$(BIN)/python bench/web_pages.py --persons 10000
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/cache_match.py
	$(BIN)/python bench/onprem_scale.py --workers 1,2 --faces 60 --images $(LFW)/images
	$(BIN)/python bench/onprem_scale.py --workers 3 --kill-one --faces 60 --images $(LFW)/images
	$(BIN)/python bench/onprem_scale.py --workers 0 --search-sizes 1000,10000,100000 --images $(LFW)/images

bench-smoke: bench-extras
	$(BIN)/python bench/accuracy.py --pairs $(LFW)/pairs-dev.txt --images $(LFW)/images --limit 40
	$(BIN)/python bench/visits.py --faces $(KNN) --people 3 --visits 5
	$(BIN)/python bench/throughput.py samples/short_hamilton_clip.mp4 --frames 30
	$(BIN)/python bench/cache_match.py --entries 1000 --calls 100
	$(BIN)/python bench/onprem_scale.py --workers 2 --faces 4 --persons 100 --images $(LFW)/images

clean:
	rm -rf $(VENV) $(HA_VENV) .state build *.egg-info
