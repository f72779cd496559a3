# prefloop: `make run` serves the platform, `make test` runs the tests.
# Each target creates .venv with plain pip on first use (and again when pyproject.toml changes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

# `make run` serves the generator you configure (PREFLOOP_GENERATOR__MODEL in the
# environment or .env). With none configured it serves the offline 'tiny' preset, so the
# platform runs anywhere; the settings' own default, Stable Diffusion 1.4 from the hub,
# is one variable away: PREFLOOP_GENERATOR__MODEL=CompVis/stable-diffusion-v1-4 make run
# Likewise the Discord bot starts when a token is configured; without one the platform
# runs without it (`prefloop run` itself insists on a token unless given --no-discord).
CONFIGURED_MODEL := $(or $(PREFLOOP_GENERATOR__MODEL),$(shell grep -s '^PREFLOOP_GENERATOR__MODEL=' .env))
CONFIGURED_TOKEN := $(or $(PREFLOOP_DISCORD__TOKEN),$(shell grep -s '^PREFLOOP_DISCORD__TOKEN=' .env))
RUN_ENV := $(if $(CONFIGURED_MODEL),,PREFLOOP_GENERATOR__MODEL=tiny)
RUN_FLAGS := $(if $(CONFIGURED_TOKEN),,--no-discord)

.PHONY: run test screenshots bench lint format clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all]' --group dev
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	@$(if $(RUN_ENV),echo "make run: no generator configured; serving the offline 'tiny' preset (see README)")
	@$(if $(RUN_FLAGS),echo "make run: no Discord token configured; serving without the bot (see README)")
	$(RUN_ENV) $(BIN)/prefloop run $(RUN_FLAGS)

# The tests' tiny preset lives in the checkout; it is built (once, under a minute) before
# the tests start, so no test's timeout includes it.
test: export PREFLOOP_PRESET_CACHE ?= $(CURDIR)/.cache/presets
test: $(STAMP)
	$(BIN)/python -m training preset tiny
	$(BIN)/python -m pytest

# The README's pictures of the web page (docs/screenshots/*.png), taken by the browser
# tests in a real Chromium (tests/support/browser.py says which).
screenshots: export PREFLOOP_PRESET_CACHE ?= $(CURDIR)/.cache/presets
screenshots: $(STAMP)
	$(BIN)/python -m training preset tiny
	PREFLOOP_REQUIRE_BROWSER=1 PREFLOOP_SCREENSHOTS_TO=docs/screenshots $(BIN)/python -m pytest tests/web/browser

bench: $(STAMP)
	$(BIN)/python -m bench.preset
	$(BIN)/python -m bench.generate
	$(BIN)/python -m bench.generate --mixed
	$(BIN)/python -m bench.arena
	$(BIN)/python -m bench.rater_weights
	$(BIN)/python -m bench.closed_loop
	$(BIN)/python -m bench.dpo_loop
	$(BIN)/python -m bench.choices
	$(BIN)/python -m bench.bot_latency
	$(BIN)/python -m bench.web
	$(BIN)/python -m bench.export
	$(BIN)/python -m bench.score
	$(BIN)/python -m bench.fit
	$(BIN)/python -m bench.adapt

# The type checker reads bot/ and training/ (pyproject.toml [tool.mypy]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
