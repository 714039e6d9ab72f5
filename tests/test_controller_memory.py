"""The controller's memory with a thread per host (issue 17 item 6): host threads share two malloc
arenas instead of taking one each (bench/README.md has the 1,000-host figures).  Counted on the
process's own memory map, in a fresh interpreter, not timed."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Eight threads each allocate and hold some memory; then the process counts its malloc arenas (glibc
# aligns every arena's heap to 64 MiB) while they are all alive.
PROBE = """
import sys, threading
from wuremote.engine.memory import limit_malloc_arenas
if sys.argv[1] == "limit":
    assert limit_malloc_arenas()
ready, keep = threading.Barrier(9), []
def work():
    keep.append([bytes(4096) for _ in range(50)])
    ready.wait()
    ready.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
ready.wait()
arenas = 0
for line in open("/proc/self/maps"):
    fields = line.split()
    if len(fields) < 6 and fields[1] == "rw-p" and int(fields[0].split("-")[0], 16) % (64 << 20) == 0:
        arenas += 1
print(arenas)
ready.wait()
"""


def arenas(mode: str) -> int:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, timeout=60,
                          check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas, read from /proc")
def test_host_threads_share_two_malloc_arenas_instead_of_taking_one_each() -> None:
    assert arenas("default") >= 4  # what a thread per host costs unlimited: an arena each, up to 8 per core
    assert arenas("limit") <= 1  # the main heap and at most one arena beside it


def test_the_operators_malloc_arena_max_is_left_to_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    from wuremote.engine.memory import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
