.PHONY: up test check bench
up:
	bash scripts/up.sh
test:
	bash scripts/test.sh
check:
	.venv/bin/ruff format --check . && .venv/bin/ruff check . && .venv/bin/mypy
bench:
	.venv/bin/python -m bench
