# The README's two commands, as make targets.
.PHONY: install demo test
install:
	bash scripts/install.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
