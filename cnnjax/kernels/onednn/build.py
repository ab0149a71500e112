"""Compiles the CPU extension (`conv.cc`: oneDNN's convolutions; `norm_act.cc`: the batch-norm
passes; `pool.cc`: pooling) once per machine and registers its handlers with XLA's CPU platform.

The first `load()` in a process compiles the sources into one library with the system C++
compiler (`$CXX`, else `g++`; `-O3 -march=native`, so the batch-norm loops use the widest vectors
the CPU has) against the XLA FFI headers jaxlib ships (`jax.ffi.include_dir()`) and oneDNN from
the `onednn-devel-cpu-gomp` / `onednn-cpu-gomp` wheels, into
`$CNNJAX_CACHE_DIR/onednn/` (default `~/.cache/cnnjax/onednn/`) under a name hashed from the
sources, the jaxlib and oneDNN versions, the compiler and the CPU's instruction-set flags, so a
later process (or a new version, or a node of another CPU sharing the cache) finds it or builds
its own; the library is written to a temporary file and renamed into place,
and its size and SHA-256 are recorded next to it (`conv-<key>.so.sha256`). A library is loaded
only when it matches its record: a truncated or corrupted file (a full disk, a killed copy) is
rebuilt, never `dlopen`ed. A compile takes ~20-30 s.

Threads: the loader sets oneDNN's OpenMP team to the cores this process was given
(`cnnjax.cores.usable_cores`: SLURM_CPUS_PER_TASK, else the CPU affinity), unless OMP_NUM_THREADS
is set.

When something is missing (not x86-64 Linux, no compiler, no oneDNN wheel, a failed build) `load()`
returns the reason instead and the convolutions stay on XLA (`cnnjax.kernels.dispatch` logs it
once).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile

import jax

from cnnjax.cores import usable_cores

SOURCES = tuple(pathlib.Path(__file__).with_name(name) for name in ("conv.cc", "norm_act.cc",
                                                                      "pool.cc"))
HEADERS = (pathlib.Path(__file__).with_name("cpu_common.h"),)  # hashed into the cache key too
# Handler name -> its symbol in the sources, registered as the FFI target "cnnjax_onednn_<name>".
HANDLERS = {"forward": "CnnjaxOnednnConvForward", "input_grad": "CnnjaxOnednnConvInputGrad",
            "weight_grad": "CnnjaxOnednnConvWeightGrad", "norm_act": "CnnjaxCpuNormAct",
            "pool": "CnnjaxCpuPool"}


def target_name(pass_name: str) -> str:
    return f"cnnjax_onednn_{pass_name}"


def cache_dir() -> pathlib.Path:
    root = os.environ.get("CNNJAX_CACHE_DIR") or pathlib.Path.home() / ".cache" / "cnnjax"
    return pathlib.Path(root) / "onednn"


def _wheel_file(dist_name: str, suffix: str) -> pathlib.Path:
    """The installed file of wheel `dist_name` whose path ends with `suffix`."""
    dist = importlib.metadata.distribution(dist_name)
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith(suffix):
            return pathlib.Path(dist.locate_file(f)).resolve()
    raise FileNotFoundError(f"{dist_name} has no file {suffix}")


def _onednn() -> tuple[pathlib.Path, pathlib.Path, str]:
    """(include dir, library dir, version) of the oneDNN wheels."""
    header = _wheel_file("onednn-devel-cpu-gomp", "include/oneapi/dnnl/dnnl.hpp")
    library = _wheel_file("onednn-cpu-gomp", "libdnnl.so.3")
    return header.parents[2], library.parent, importlib.metadata.version("onednn-cpu-gomp")


def _compile(compiler: str, include: pathlib.Path, libdir: pathlib.Path, out: pathlib.Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [compiler, "-O3", "-march=native", "-std=c++20", "-shared", "-fPIC", "-fopenmp", "-w",
           *map(str, SOURCES), "-o", tmp,
           f"-I{jax.ffi.include_dir()}", f"-I{include}", f"-L{libdir}", "-l:libdnnl.so.3",
           f"-Wl,-rpath,{libdir}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"{compiler} failed ({lines[0] if lines else done.returncode})")
        record = _record(out)
        record_tmp = record.with_name(f"{record.name}.{os.getpid()}.tmp")
        record_tmp.write_text(_digest(pathlib.Path(tmp)))
        # The library first, then its record: a reader in between sees a mismatch and rebuilds.
        os.replace(tmp, out)
        os.replace(record_tmp, record)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _record(library: pathlib.Path) -> pathlib.Path:
    return library.with_name(library.name + ".sha256")


def _digest(path: pathlib.Path) -> str:
    """"<size> <sha256>" of a file's bytes."""
    data = path.read_bytes()
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"


def _intact(library: pathlib.Path) -> bool:
    """Whether `library` exists and matches the size and checksum recorded when it was built."""
    try:
        return _digest(library) == _record(library).read_text().strip()
    except OSError:
        return False


def _build() -> pathlib.Path:
    """The compiled library, built now if the cache lacks it; raises with the reason."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(f"oneDNN's CPU wheels are x86-64 Linux only, this is "
                           f"{sys.platform}/{platform.machine()}")
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'g++')!r} not found)")
    try:
        include, libdir, version = _onednn()
    except (importlib.metadata.PackageNotFoundError, FileNotFoundError) as e:
        raise RuntimeError(f"the oneDNN wheels are not installed ({e}; pip install "
                           f"onednn-cpu-gomp onednn-devel-cpu-gomp)") from None
    compiler_id = subprocess.run([compiler, "--version"], capture_output=True,
                                 text=True).stdout.splitlines()[:1]
    key = hashlib.sha256("\n".join([*(s.read_text() for s in SOURCES + HEADERS), jax.__version__,
                                    version,
                                    str(libdir), *compiler_id, _cpu_flags()]).encode()
                         ).hexdigest()[:16]
    out = cache_dir() / f"conv-{key}.so"
    if not _intact(out):
        _compile(compiler, include, libdir, out)
        if not _intact(out):
            raise RuntimeError(f"the library just built at {out} does not match its checksum")
    return out


def _cpu_flags() -> str:
    """The CPU's instruction-set flags (the first "flags" line of /proc/cpuinfo): the library is
    built for this CPU (-march=native)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def team_size() -> int:
    """oneDNN's OpenMP team size: OMP_NUM_THREADS when set, else the cores this process was
    given."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else usable_cores()


@functools.cache
def load() -> tuple[ctypes.CDLL | None, str | None]:
    """(the loaded library, None) with the FFI targets registered, or (None, why not)."""
    try:
        lib = ctypes.CDLL(str(_build()))
    except (RuntimeError, OSError) as e:
        return None, str(e)
    lib.CnnjaxOnednnSetThreads(team_size())
    for pass_name, symbol in HANDLERS.items():
        jax.ffi.register_ffi_target(target_name(pass_name), jax.ffi.pycapsule(getattr(lib, symbol)),
                                    platform="cpu")
    return lib, None


def require() -> None:
    """Loads the extension (registering its FFI targets); raises RuntimeError with the reason
    where it is unavailable."""
    reason = load()[1]
    if reason is not None:
        raise RuntimeError(f"the CPU extension (oneDNN) is unavailable: {reason}")
