"""A fresh process per run: whatever run N leaves behind, run N+1 cannot see it."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from sandbox_support import CAPS, IS_ROOT, assert_serves_normally

from b24robots.errors import SandboxError
from b24robots.sandbox import SandboxPool

PORTAL = {"portal": "a.example"}


@pytest.fixture(scope="module", params=[True, False], ids=["language-on", "language-off"])
def pool(request: pytest.FixtureRequest) -> Iterator[SandboxPool]:
    # One slot: with warm reuse, run N+1 would land in run N's process every time.
    with SandboxPool(1, caps=CAPS, language_hardening=request.param) as p:
        yield p


@pytest.fixture(scope="module")
def raw_pool() -> Iterator[SandboxPool]:
    with SandboxPool(1, caps=CAPS, language_hardening=False) as p:
        yield p


def robot(body: str, top: str = "") -> str:
    lines = "\n".join("    " + line for line in body.splitlines())
    return f"{top}\ndef run(inputs, ctx):\n{lines}\n"


def test_patched_classes_of_allowed_modules_do_not_survive(pool: SandboxPool) -> None:
    writer = robot(
        "json.JSONDecoder.spy = inputs['s']\njson.JSONEncoder.default = lambda self, o: 'forged'\n"
        "collections.Counter.most_common = lambda self, n=None: [('forged', 1)]\nreturn {}",
        "import json, collections",
    )
    reader = robot(
        "return {'spy': hasattr(json.JSONDecoder, 'spy'), 'common': collections.Counter('aab').most_common(1)}",
        "import json, collections",
    )
    pool.run(writer, {"s": "run one's input"}, context=PORTAL)
    assert pool.run(reader, {}, context=PORTAL).outputs == {"spy": False, "common": [["a", 2]]}


def test_random_seed_does_not_survive(pool: SandboxPool) -> None:
    pool.run(robot("random.seed(42)\nreturn {}", "import random"), {}, context=PORTAL)
    after = [pool.run(robot("return {'r': random.random()}", "import random"), {}, context=PORTAL) for _ in range(3)]
    seeded = random.Random(42).random()
    values = [result.outputs["r"] for result in after]
    assert seeded not in values
    assert len(set(values)) == 3  # and every run is seeded afresh


def test_module_state_does_not_survive(pool: SandboxPool) -> None:
    source = robot("SEEN.append(inputs['n'])\nreturn {'seen': list(SEEN)}", "SEEN = []")
    for n in range(3):
        assert pool.run(source, {"n": n}, context=PORTAL).outputs == {"seen": [n]}


def test_files_written_do_not_survive(raw_pool: SandboxPool) -> None:
    writer = robot(
        "import os\ntry:\n    with open('marker', 'w') as f:\n        f.write('run one')\n"
        "except PermissionError:\n    pass\nreturn {'ls': os.listdir('.')}"
    )
    # as root the worker's root is read-only, so there is nothing to survive in the first place
    assert raw_pool.run(writer, {}, context=PORTAL).outputs == {"ls": [] if IS_ROOT else ["marker"]}
    reader = robot("import os\nreturn {'ls': os.listdir('.')}")
    assert raw_pool.run(reader, {}, context=PORTAL).outputs == {"ls": []}


def test_patched_builtins_and_sys_modules_do_not_survive(raw_pool: SandboxPool) -> None:
    writer = robot(
        "import builtins, sys\nbuiltins.len = lambda x: 42\nsys.modules['json'].loads = lambda s: 'forged'\n"
        "sys.modules['spy'] = sys\nreturn {}"
    )
    with pytest.raises(SandboxError, match="broke the protocol"):
        raw_pool.run(writer, {}, context=PORTAL)  # its own frame is cut short by the patched len()
    reader = robot(
        "import json, sys\nreturn {'len': len([1, 2]), 'loads': json.loads('1'), 'spy': 'spy' in sys.modules}"
    )
    assert raw_pool.run(reader, {}, context=PORTAL).outputs == {"len": 2, "loads": 1, "spy": False}


def test_threads_die_with_the_run(raw_pool: SandboxPool) -> None:
    writer = robot(
        "import _thread, time\ndef spin():\n    while True:\n        time.sleep(0.001)\n"
        "for _ in range(4):\n    _thread.start_new_thread(spin, ())\n"
        "time.sleep(0.2)\nreturn {'threads': _thread._count()}"
    )
    assert raw_pool.run(writer, {}, context=PORTAL).outputs == {"threads": 4}
    reader = robot("import _thread\nreturn {'threads': _thread._count()}")
    assert raw_pool.run(reader, {}, context=PORTAL).outputs == {"threads": 0}
    assert_serves_normally(raw_pool)


def test_every_run_is_another_process(raw_pool: SandboxPool) -> None:
    # Not root, each worker is pid 1 of a pid namespace of its own; /proc (the host's, or
    # bubblewrap's) still tells them apart. As root the chrooted worker has no /proc, and its pid does.
    source = robot(
        "import os\nhere = os.readlink('/proc/self') if os.path.exists('/proc/self') else None\n"
        "return {'pid': [os.getpid(), here]}"
    )
    pids = [tuple(raw_pool.run(source, {}, context=PORTAL).outputs["pid"]) for _ in range(4)]
    assert len(set(pids)) == 4
