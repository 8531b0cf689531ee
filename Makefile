.PHONY: run test lint

run:
	scripts/dev run

test:
	scripts/dev test

lint:
	scripts/dev lint
