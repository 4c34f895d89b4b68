# The README commands, as make targets.
.PHONY: install demo train-demo test
install:
	bash scripts/install.sh
demo:
	bash scripts/demo.sh
train-demo:
	bash scripts/train_demo.sh
test:
	bash scripts/test.sh
