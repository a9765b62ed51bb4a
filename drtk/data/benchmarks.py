"""Public refusal benchmarks, fetched by name from their published files and cached locally.

drtk ships none of these files; `fetch_benchmark` downloads the published file once (plain HTTP,
`urllib.request`, 20 s timeout) into ``$DRTK_CACHE_DIR/benchmarks/`` (default ``~/.cache/drtk``) and
reads it from there afterwards. Without network access, place the file at `benchmark_cache_path(name)`
yourself, or pass a local file path to `load_prompts`. drtk never silently substitutes its own prompt sets.

Registered names (prompt column; rows kept; license):

- ``advbench``: llm-attacks/llm-attacks, data/advbench/harmful_behaviors.csv (goal; all 520; MIT).
- ``harmbench``: centerforaisafety/HarmBench, data/behavior_datasets/harmbench_behaviors_text_all.csv
  (Behavior, category SemanticCategory; FunctionalCategory == "standard", 200 rows; MIT).
- ``jailbreakbench``: HF JailbreakBench/JBB-Behaviors, data/harmful-behaviors.csv (Goal, category Category;
  all 100; MIT).
- ``strongreject``: alexandrasouly/strongreject, strongreject_dataset/strongreject_dataset.csv
  (forbidden_prompt, category category; all 313; MIT).
- ``xstest`` / ``xstest-unsafe``: paul-rottger/exaggerated-safety, xstest_prompts.csv (prompt, category type;
  label == "safe", 250 rows / label == "unsafe", 200 rows; CC-BY-4.0).
- ``or-bench``: HF bench-llm/or-bench, or-bench-hard-1k.csv (prompt, category category; the hard-1k subset;
  CC-BY-4.0).
- ``alpaca``: tatsu-lab/stanford_alpaca, alpaca_data.json (instruction; rows whose input == "";
  CC-BY-NC-4.0, non-commercial).

GitHub files are fetched from raw.githubusercontent.com/<repo>/main/..., Hugging Face ("HF") files from
huggingface.co/datasets/<id>/resolve/main/...; the exact URLs are in `BENCHMARKS[name].url`.
Check each license before redistributing derived data.
"""

import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from drtk._cache import cache_dir
from drtk.errors import BenchmarkUnavailableError, unknown_name_error

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 20.0


@dataclass(frozen=True, kw_only=True)
class Benchmark:
    """Where a public benchmark is published and how to read prompts from it.

    Args:
        name: registry name, e.g. "advbench".
        url: the published raw file.
        filename: name of the cached copy under the cache's ``benchmarks/`` folder.
        column: column holding the prompt text.
        category_column: column holding a category, or None.
        keep: (column, value) pairs; only rows matching all of them are kept.
        license: license of the published data.
        description: one line on what the prompts are.
    """

    name: str
    url: str
    filename: str
    column: str
    category_column: str | None
    keep: tuple[tuple[str, str], ...] = ()
    license: str
    description: str


_GH = "https://raw.githubusercontent.com"
_HF = "https://huggingface.co/datasets"
_XSTEST_URL = f"{_GH}/paul-rottger/exaggerated-safety/main/xstest_prompts.csv"

BENCHMARKS: MappingProxyType[str, Benchmark] = MappingProxyType(
    {
        b.name: b
        for b in (
            Benchmark(
                name="advbench",
                url=f"{_GH}/llm-attacks/llm-attacks/main/data/advbench/harmful_behaviors.csv",
                filename="advbench_harmful_behaviors.csv",
                column="goal",
                category_column=None,
                license="MIT",
                description="AdvBench harmful behaviors (Zou et al. 2023), 520 instructions.",
            ),
            Benchmark(
                name="harmbench",
                url=f"{_GH}/centerforaisafety/HarmBench/main/data/behavior_datasets/harmbench_behaviors_text_all.csv",
                filename="harmbench_behaviors_text_all.csv",
                column="Behavior",
                category_column="SemanticCategory",
                keep=(("FunctionalCategory", "standard"),),
                license="MIT",
                description="HarmBench text behaviors (Mazeika et al. 2024), the 'standard' functional category.",
            ),
            Benchmark(
                name="jailbreakbench",
                url=f"{_HF}/JailbreakBench/JBB-Behaviors/resolve/main/data/harmful-behaviors.csv",
                filename="jbb_harmful_behaviors.csv",
                column="Goal",
                category_column="Category",
                license="MIT",
                description="JBB-Behaviors harmful split (Chao et al. 2024), 100 behaviors.",
            ),
            Benchmark(
                name="strongreject",
                url=f"{_GH}/alexandrasouly/strongreject/main/strongreject_dataset/strongreject_dataset.csv",
                filename="strongreject_dataset.csv",
                column="forbidden_prompt",
                category_column="category",
                license="MIT",
                description="StrongREJECT forbidden prompts (Souly et al. 2024).",
            ),
            Benchmark(
                name="xstest",
                url=_XSTEST_URL,
                filename="xstest_prompts.csv",
                column="prompt",
                category_column="type",
                keep=(("label", "safe"),),
                license="CC-BY-4.0",
                description="XSTest safe prompts (Roettger et al. 2024): should NOT be refused.",
            ),
            Benchmark(
                name="xstest-unsafe",
                url=_XSTEST_URL,
                filename="xstest_prompts.csv",
                column="prompt",
                category_column="type",
                keep=(("label", "unsafe"),),
                license="CC-BY-4.0",
                description="XSTest unsafe contrast prompts: should be refused.",
            ),
            Benchmark(
                name="or-bench",
                url=f"{_HF}/bench-llm/or-bench/resolve/main/or-bench-hard-1k.csv",
                filename="or-bench-hard-1k.csv",
                column="prompt",
                category_column="category",
                license="CC-BY-4.0",
                description="OR-Bench-Hard-1K (Cui et al. 2024): seemingly toxic but safe prompts.",
            ),
            Benchmark(
                name="alpaca",
                url=f"{_GH}/tatsu-lab/stanford_alpaca/main/alpaca_data.json",
                filename="alpaca_data.json",
                column="instruction",
                category_column=None,
                keep=(("input", ""),),
                license="CC-BY-NC-4.0",
                description="Stanford Alpaca instructions without extra input (harmless baseline).",
            ),
        )
    }
)


def get_benchmark(name: str) -> Benchmark:
    """Return the registry entry for `name`, or raise `RegistryError` with a did-you-mean hint."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise unknown_name_error("benchmark", name, list(BENCHMARKS)) from None


def benchmark_cache_path(name: str) -> Path:
    """Return where the published file of benchmark `name` is (or will be) cached."""
    return cache_dir() / "benchmarks" / get_benchmark(name).filename


def fetch_benchmark(name: str) -> Path:
    """Return the local path of benchmark `name`'s published file, downloading it if not cached.

    Args:
        name: a key of `BENCHMARKS`.

    Returns:
        Path of the cached file.

    Raises:
        RegistryError: `name` is not a known benchmark.
        BenchmarkUnavailableError: the file is not cached and could not be downloaded.
    """
    bench = get_benchmark(name)
    path = benchmark_cache_path(name)
    if path.is_file():
        return path
    logger.info("downloading benchmark %r from %s to %s", name, bench.url, path)
    try:
        request = urllib.request.Request(bench.url, headers={"User-Agent": "drtk"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(payload)
        os.replace(tmp, path)  # atomic, so an interrupted download never leaves a truncated cache file
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise BenchmarkUnavailableError(
            f"benchmark {name!r} is not cached and could not be downloaded from {bench.url} ({err}). "
            f"Fix: download that file yourself and place it at {path} (set DRTK_CACHE_DIR to move the "
            "cache), or pass a local file path to load_prompts()."
        ) from err
    return path
