"""Numba cache files of a kernel module are dropped once its callees' sources change, and kept otherwise."""
from pathlib import Path

from models import kernel_cache
from models.kernel_cache import drop_stale_cache_files, project_imports


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

    assert drop_stale_cache_files(module, [callee])          # no record yet: the files may be stale
    assert not any(path.exists() for path in files) and other.exists()
    for path in files:
        path.write_bytes(b"compiled again")
    assert not drop_stale_cache_files(module, [callee])      # same callee source: kept
    assert all(path.exists() for path in files)
    callee.write_text("SCALE = 2\n")
    assert drop_stale_cache_files(module, [callee])          # the callee changed: dropped
    assert not any(path.exists() for path in files) and other.exists()


def test_a_kernel_modules_callees_are_the_project_modules_it_imported_from():
    import rt_engine.io.native_audio  # noqa: F401 (the module whose imports are read)

    names = {path.name for path in project_imports("rt_engine.io.native_audio")}
    assert {"native_midi.py", "voice_kernel.py", "commands.py"} <= names
    assert "native_audio.py" not in names and "kernel_cache.py" not in names
    root = Path(kernel_cache.__file__).resolve().parents[1]
    assert all(path.relative_to(root).parts[0] in ("models", "rt_engine")  # sub-packages included
               for path in project_imports("rt_engine.io.native_audio"))
