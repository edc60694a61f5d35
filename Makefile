# Thin entry points; the logic lives in scripts/.
.PHONY: demo test bench sim

demo:
	scripts/demo.sh

test:
	scripts/test.sh

bench:
	scripts/bench.sh

sim:
	scripts/sim.sh
