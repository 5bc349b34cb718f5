# The two commands a new user needs (see README.md):
#   make demo   set up what the demo needs (scripts/setup.sh demo), then run `l7scope demo`
#   make test   set up everything the tests need too, then run the whole test suite (what .ci/run runs)
.PHONY: setup setup-demo demo test unit lint bench proto clean

VENV := .venv/bin
PYTEST_ARGS ?=

setup:
	@bash scripts/setup.sh test

# The demo needs none of the test toolchain (ClickHouse, etcd, Chromium, Go, wrk, the kube build).
setup-demo:
	@bash scripts/setup.sh demo

demo: setup-demo
	$(VENV)/l7scope demo $(DEMO_ARGS)

test: setup
	$(VENV)/ruff check src tests bench
	$(VENV)/mypy
	$(VENV)/lint-imports
	$(VENV)/pytest $(PYTEST_ARGS)

unit: setup
	$(VENV)/pytest tests/unit $(PYTEST_ARGS)

lint: setup
	$(VENV)/ruff check src tests bench
	$(VENV)/mypy
	$(VENV)/lint-imports

bench: setup
	$(VENV)/python -m bench $(BENCH_ARGS)

# Regenerate the Policy Sync stubs after editing src/l7scope/contracts/policysync.proto.
proto:
	$(VENV)/python -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src --grpc_python_out=src src/l7scope/contracts/policysync.proto

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
