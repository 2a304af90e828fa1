"""Numba cache files of a kernel module are dropped once its callees' sources change, and kept otherwise."""
from models.kernel_cache import drop_stale_cache


def test_cache_files_go_when_a_callee_changes_and_stay_while_it_does_not(tmp_path):
    module, callee = tmp_path / "kernels.py", tmp_path / "helpers.py"
    module.write_text("# kernels\n")
    callee.write_text("SCALE = 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    files = [cache / "kernels.render-10.py311.nbi", cache / "kernels.render-10.py311.1.nbc"]
    other = cache / "helpers.scale-3.py311.nbi"
    for path in files + [other]:
        path.write_bytes(b"compiled")

    assert drop_stale_cache(module, [callee])          # no record yet: the files may be stale
    assert not any(path.exists() for path in files) and other.exists()
    for path in files:
        path.write_bytes(b"compiled again")
    assert not drop_stale_cache(module, [callee])      # same callee source: kept
    assert all(path.exists() for path in files)
    callee.write_text("SCALE = 2\n")
    assert drop_stale_cache(module, [callee])          # the callee changed: dropped
    assert not any(path.exists() for path in files) and other.exists()
