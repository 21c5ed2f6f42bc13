# The two commands a newcomer needs: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench browser screenshots clean clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: migrate, then start the simulator (without LUMA_API_KEY), the web app and the worker
run: $(STAMP)
	$(BIN)/tracker dev

# test processes at once: the tests mostly wait (servers, processes, timers), so more than the cores
TEST_PROCESSES ?= 3

## test: lint and type-check, then every test (SQLite; PostgreSQL too when TEST_DATABASE_URL is set):
## the suite in TEST_PROCESSES processes, then alone the tests that would disturb the others
test: $(STAMP) browser lint
	$(BIN)/pytest -n $(TEST_PROCESSES) -m "not serial"
	$(BIN)/pytest -m serial

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The dashboard's browser tests drive Debian's chromium; no browser is downloaded.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

## screenshots: retake the README's pictures (docs/img/) from the browser test that checks those pages
screenshots: $(STAMP) browser
	UPDATE_SCREENSHOTS=1 $(BIN)/pytest -q tests/browser -k test_screenshots

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .mypy_cache

## clean-demo: the next `make run` starts over (stop it first): forgets the simulator's tasks, the tracker's database and its archived media
clean-demo:
	rm -rf instance/simulator.db instance/simulator.db-wal instance/simulator.db-shm \
	  instance/tracker.db instance/tracker.db-wal instance/tracker.db-shm instance/media
