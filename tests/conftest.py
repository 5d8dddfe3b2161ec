import os

# Tests run on the CPU; keep XLA from grabbing every core's worth of threads per process.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite's time is mostly XLA compiling tiny programs: compile them without LLVM's optimisation
# passes (about a quarter less time); the tests' tolerances do not depend on the passes. A user's own
# XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
# Many tests build the same programs (a family's step, an agent's act) through separate jit wrappers:
# one compilation cache on disk, fresh per run (created here in the controller, inherited by the
# xdist workers), lets every later build of an identical program load it instead of compiling.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="metarl-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    atexit.register(shutil.rmtree, _cache, True)
