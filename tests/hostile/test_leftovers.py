"""What killed processes leave: a model conversion's temporary folder is swept by the next one (a
live conversion's is kept); a full disk is described in words that say how full."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lectern.errors import NotEnoughDisk
from lectern.ingest.atomic import atomic_folder

HOLD = """
import os, signal, sys
from pathlib import Path
from lectern.ingest.atomic import atomic_folder
with atomic_folder(Path(sys.argv[1]), done="done.json") as tmp:
    (tmp / "weights").write_bytes(b"w" * 1000)
    print(tmp, flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)  # a conversion killed half-way (the OOM killer, ^C twice)
    sys.stdin.readline()  # a conversion still at work
"""


def _converting(target: Path, how: str) -> tuple[subprocess.Popen[str], Path]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target), how], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_conversions_folder_is_swept_by_the_next(tmp_path: Path) -> None:
    models = tmp_path / "models"
    killed, dead_tmp = _converting(models / "big-model", "kill")
    assert killed.wait(60) == -signal.SIGKILL and dead_tmp.is_dir()
    live, live_tmp = _converting(models / "other-model", "hold")
    old = models / ".ancient-model.k3j4h5g6.tmp"  # from before folders named their process
    old.mkdir()
    day_ago = time.time() - 2 * 86400
    os.utime(old, (day_ago, day_ago))
    try:
        with atomic_folder(models / "next-model", done="done.json") as tmp:
            (tmp / "done.json").write_text("{}")
        assert not dead_tmp.exists() and not old.exists()
        assert live_tmp.is_dir()  # a live process's folder is its own
    finally:
        assert live.stdin is not None
        live.stdin.write("\n")
        live.stdin.close()
        live.wait(60)
    assert sorted(p.name for p in models.iterdir()) == ["next-model", "other-model"]


def test_a_full_disk_says_how_full_in_readable_units(tmp_path: Path) -> None:
    said = str(NotEnoughDisk("converting a model", tmp_path, None, 3 * 1024**2))
    assert "3.0 MiB free" in said and "0.00 GiB" not in said
    said = str(NotEnoughDisk("writing x", tmp_path, None, 0))
    assert "is full (0 bytes free)" in said
    said = str(NotEnoughDisk("converting a model", tmp_path, 2 * 1024**3, 200 * 1024**2))
    assert "about 2.0 GiB" in said and "200.0 MiB free" in said
