import os

# Tests run on the CPU; keep XLA from grabbing every core's worth of threads per process.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite's time is mostly XLA compiling tiny programs: compile them without LLVM's optimisation
# passes (about a quarter less time); the tests' tolerances do not depend on the passes. A user's own
# XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
