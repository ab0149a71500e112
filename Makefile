# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv if missing and (re)installs the package when setup.cfg or the lock changes.
# constraints.txt pins every package to the version the suite passed with (`make lock` rewrites
# it from the venv; see the README, "Upgrading the dependencies").
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pytest-xdist spreads test files over the cores; JAX compiles are mostly single-threaded.
PYTEST_WORKERS ?= 2
RUN_WORKDIR ?= runs/default
LOCK := constraints.txt

.PHONY: run test test-slow test-all test-cluster clean-venv lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: setup.cfg pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install --quiet -c $(LOCK) -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/python launch.py --config=configs/default.py --workdir=$(RUN_WORKDIR)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not slow and not cluster"

# The slow tests CI runs after the fast suite (.ci/run):
# full-size VGG against PyTorch, the real-data preparation (skipped where ../shared/data is
# absent), the deepest ResNets' gradients, training through grain worker processes, AlexNet's
# config end to end, and the scale-ready checks on the larger models (ResNet-50's collectives over
# 8 devices, the CUDA/TPU exports of ResNet-50, MobileNetV2 and EfficientNet-B0; about 3.5 min,
# measured 2026-12-02 under load; ResNet-18's 8-device step too, 4 CPU-seconds), the trainer's
# steps with the kernels on 8 forced host devices (ResNet-8, about 35 CPU-seconds), the jvp of
# ResNet-20's training loss on oneDNN (~25 CPU-s), oneDNN's bounded memory over 240 shapes, the
# Ctrl-C run with grain workers, every Pallas kernel through jvp/jacfwd/hessian/HVPs/vmap against
# float64 and inside shard_map (interpret mode), the Optuna searches of tests/test_sweep_search.py (200 CPU-s
# under load, 2026-12-06), MobileNetV2's loss and gradients through the Pallas kernels against
# XLA in float64 (70 s on idle cores, 2026-12-06), and three end-to-end checks moved out of the
# fast suite to keep it under 25 minutes (the GPU pack's dry run, a local sweep, the benchmark's
# options reaching the step: ~230 CPU-s); the whole list took 10 min 38 s on idle cores (46 tests,
# 2026-12-06, fourth session; 13 min 39 s in the third; 8 min 20 s before those three and the CPU kernels' tests). The
# other slow tests are deeper or wider copies of models the fast suite covers, or run Pallas
# kernels in interpret mode; `make test-all` runs them.
SLOW_CI := \
	'tests/test_models_classic.py::test_deep_vgg_from_torch_matches_torch_at_full_size' \
	'tests/test_data_prepare.py::test_shared_mnist_prepared_and_read_back' \
	'tests/test_data_prepare.py::test_shared_cifar10_jpeg_copy_prepared_and_read_back' \
	'tests/test_models_registry.py::test_jit_grad_at_the_smallest_input[resnet152]' \
	'tests/test_models_registry.py::test_jit_grad_at_the_smallest_input[cifar_resnet110]' \
	'tests/test_data_grain.py::test_launch_trains_on_a_prepared_dataset_with_grain_workers' \
	'tests/test_train_signals.py::test_ctrl_c_with_grain_workers_saves_once_quietly_and_exits_130' \
	'tests/test_configs_smoke.py::test_smoke_variant_trains[imagenet_alexnet]' \
	'tests/test_scale_ready.py' \
	'tests/test_train_kernels_devices.py' \
	'tests/test_kernels_onednn_hardening.py::test_resident_memory_stays_bounded_over_240_shapes' \
	'tests/test_kernels_compose.py::test_jvp_of_a_resnet_loss_on_onednn_equals_xla' \
	'tests/test_sweep_search.py' \
	'tests/test_kernels_transforms.py' \
	'tests/test_kernels_models.py::test_mobilenet_v2_pallas_equals_float64_xla' \
	'tests/test_gpu_pack.py::test_dry_run_runs_every_stage_without_tfds_or_grain' \
	'tests/test_sweep_local.py::test_local_sweep_runs_every_point_then_skips_finished_ones' \
	'tests/test_benchmark.py::test_xla_options_remat_and_kernels_reach_the_step'

test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m slow $(SLOW_CI)

test-all: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not cluster"

# The real-SLURM tests (tests/test_sweep_slurm.py; a cluster from `sudo .ci/slurm_up.sh`):
# 4 tests, 4 min 46 s on the 2 idle cores (2026-12-06, fourth session).
test-cluster: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m cluster

clean-venv:
	rm -rf $(VENV)

# Rewrites the lock from the venv's installed versions: run it after `make test` passed with
# upgraded packages. A local build label (torch's +cpu) is dropped so PyPI serves the version.
lock: | $(BIN)/python
	{ echo "# The versions \`make test\` passed with (Python $$($(BIN)/python -c 'import sys; print(*sys.version_info[:3], sep=".")'), Linux x86-64)."; \
	  echo "# Used as pip constraints by make run / make test / CI; regenerate with \`make lock\`."; \
	  $(BIN)/pip freeze --exclude-editable | sed -e 's/+[a-z0-9.]*$$//' -e '/^#/d' | LC_ALL=C sort -f; } > $(LOCK)
