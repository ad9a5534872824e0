"""A short, bounded fuzz run of the C tick encoder, then its corpus under AddressSanitizer.

Two copies of `_tickjson.c` are built here with gcc: one with comparison tracing, which lets
atheris's libFuzzer steer by the C code's own branches (see cov_shim.c), and one with
AddressSanitizer + UndefinedBehaviorSanitizer, run with the ASan runtime preloaded into
Python and `PYTHONMALLOC=malloc`, so every read past a buffer is reported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SOURCE = HERE.parents[1] / "ticker_worker" / "kite" / "_tickjson.c"
TARGET = HERE / "fuzz_tickjson.py"
RUNS = 20_000


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        message = "gcc is needed to build the fuzzing copies of the C encoder"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return gcc


def _build(out: Path, *flags: str, extra: tuple[Path, ...] = ()) -> Path:
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        [_gcc(), "-O1", "-g", "-shared", "-fPIC", f"-I{include}", *flags, str(SOURCE),
         *map(str, extra), "-ldl", "-o", str(out)],
        check=True, capture_output=True, text=True,
    )
    return out


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TARGET), *args], env={**os.environ, **env},
        capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus a short coverage-guided run leaves behind."""
    work = tmp_path_factory.mktemp("fuzz")
    traced = _build(work / "_tickjson_cov.so", "-fsanitize-coverage=trace-cmp",
                    extra=(HERE / "cov_shim.c",))
    out = work / "corpus"
    out.mkdir()
    done = _run({"TICKJSON_SO": str(traced)}, str(out), f"-runs={RUNS}", "-seed=1",
                "-use_value_profile=1", "-max_len=4096", f"-artifact_prefix={work}/")
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"#{RUNS}\tDONE" in done.stderr
    return out


def test_a_bounded_fuzz_run_finds_no_mismatch_and_is_steered_by_the_c_code(
    corpus: Path,
) -> None:
    # Without the C comparisons the Python-side coverage alone keeps a corpus of about 15.
    assert len(list(corpus.iterdir())) > 60


def test_the_corpus_and_more_runs_are_clean_under_address_sanitizer(
    corpus: Path, tmp_path: Path
) -> None:
    sanitized = _build(tmp_path / "_tickjson_asan.so", "-fno-omit-frame-pointer",
                       "-fsanitize=address,undefined", "-fno-sanitize-recover=all")
    runtime = [subprocess.run([_gcc(), f"-print-file-name={lib}"], capture_output=True,
                              text=True, check=True).stdout.strip()
               for lib in ("libasan.so", "libubsan.so")]
    done = _run({
        "TICKJSON_SO": str(sanitized), "LD_PRELOAD": ":".join(runtime),
        "ASAN_OPTIONS": "detect_leaks=0", "PYTHONMALLOC": "malloc",
    }, str(corpus), "-runs=3000", "-seed=2", "-max_len=4096", f"-artifact_prefix={tmp_path}/")
    assert "Sanitizer" not in done.stderr or "ERROR" not in done.stderr, done.stderr[-4000:]
    assert done.returncode == 0, done.stderr[-4000:]
    assert "INFO: seed corpus: files:" in done.stderr  # the corpus was replayed
