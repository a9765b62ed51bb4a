import os
import subprocess
import sys


def test_import_has_no_side_effects(tmp_path):
    env = dict(os.environ, DRTK_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path / "home"))
    code = (
        "import logging, torch, drtk\n"
        "assert not logging.getLogger().handlers, 'drtk configured logging'\n"
        "assert not logging.getLogger('drtk').handlers\n"
        "print(drtk.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "home").exists()


def test_public_api_is_small_and_importable():
    import drtk

    assert 10 <= len(drtk.__all__) <= 30
    for name in drtk.__all__:
        assert hasattr(drtk, name), name
