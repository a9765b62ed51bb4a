"""Public benchmarks: offline errors name the URL and the cache path; a pre-placed cache file is used."""

import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from drtk.data import BENCHMARKS, benchmark_cache_path, load_prompts
from drtk.errors import BenchmarkUnavailableError


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("DRTK_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_offline_benchmark_raises_with_url_and_fix(offline_cache: Path, name: str) -> None:
    with pytest.raises(BenchmarkUnavailableError) as info:
        load_prompts(name)
    message = str(info.value)
    assert BENCHMARKS[name].url in message and name in message
    assert str(benchmark_cache_path(name)) in message and "unreachable" in message
    assert not benchmark_cache_path(name).exists()


def test_cache_dir_is_read_at_call_time(offline_cache: Path) -> None:
    assert benchmark_cache_path("advbench").parent == offline_cache / "benchmarks"


def test_preplaced_advbench_csv_is_used(offline_cache: Path) -> None:
    path = benchmark_cache_path("advbench")
    path.parent.mkdir(parents=True)
    path.write_text("goal,target\nDo bad thing A,Sure A\nDo bad thing B,Sure B\n", encoding="utf-8")
    ps = load_prompts("advbench")
    assert list(ps) == ["Do bad thing A", "Do bad thing B"]
    assert ps.name == ps.source == "advbench"


def test_preplaced_xstest_is_filtered_by_label(offline_cache: Path) -> None:
    path = benchmark_cache_path("xstest")
    path.parent.mkdir(parents=True)
    path.write_text(
        "id,prompt,type,label,focus,note\n1,Safe one here,homonyms,safe,x,\n2,Unsafe one here,contrast,unsafe,x,\n"
        "3,Safe two here,history,safe,x,\n",
        encoding="utf-8",
    )
    safe = load_prompts("xstest")
    assert list(safe) == ["Safe one here", "Safe two here"] and safe.categories == ("homonyms", "history")
    assert list(load_prompts("xstest-unsafe")) == ["Unsafe one here"]


def test_preplaced_harmbench_and_alpaca_apply_row_filters(offline_cache: Path) -> None:
    harm = benchmark_cache_path("harmbench")
    harm.parent.mkdir(parents=True)
    harm.write_text(
        "Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID\n"
        "B one,standard,illegal,,,b1\nB two,contextual,illegal,,ctx,b2\nB three,copyright,copyright,,,b3\n",
        encoding="utf-8",
    )
    ps = load_prompts("harmbench")
    assert list(ps) == ["B one"] and ps.categories == ("illegal",)
    alpaca = benchmark_cache_path("alpaca")
    alpaca.write_text(
        json.dumps(
            [
                {"instruction": "Name a fruit", "input": "", "output": "Apple"},
                {"instruction": "Summarize", "input": "long text", "output": "..."},
            ]
        )
    )
    assert list(load_prompts("alpaca")) == ["Name a fruit"]


def test_download_writes_cache_once(offline_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_urlopen(request: urllib.request.Request, timeout: float) -> io.BytesIO:
        calls.append(request.full_url)
        assert timeout == 20
        return io.BytesIO(b"category,source,forbidden_prompt\nfraud,custom,Forbidden thing\n")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    assert list(load_prompts("strongreject")) == ["Forbidden thing"]
    assert list(load_prompts("strongreject")) == ["Forbidden thing"]
    assert calls == [BENCHMARKS["strongreject"].url]
    assert benchmark_cache_path("strongreject").is_file()
