# Thin entry points; the logic lives in scripts/.
.PHONY: demo test bench

demo:
	scripts/demo.sh

test:
	scripts/test.sh

bench:
	scripts/bench.sh
