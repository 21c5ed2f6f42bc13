"""The shape of the code, held by tests: no import cycles, a small package root, a worker
and CLI without Flask, a simulator outside the service, test files that import only helpers.

Read from the source (tests/support/imports.py) where that suffices; the Flask checks run a
fresh interpreter, since this one has imported everything already.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from tests.support.imports import (
    ROOT,
    cycles,
    foreign_test_imports,
    graph,
    imported_names,
    modules,
)
from tracker.settings import Settings


def test_no_import_cycles() -> None:
    assert cycles(graph("tracker", "lumasim")) == []


def test_the_cycle_check_sees_a_lazy_import() -> None:
    """A cycle closed by an import inside a function is still a cycle (cli and devrun were)."""
    edges = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert cycles(edges) == [["a", "b"]]
    known = set(modules("tracker"))
    path = ROOT / "tracker" / "cli" / "processes.py"
    cli = imported_names("tracker.cli.processes", path, known)
    assert "tracker.cli.dev" in cli  # imported inside `dev()`, and counted


def test_the_package_root_holds_no_code() -> None:
    """create_app is tracker.web.app's: the root importing the web layer broke the layers."""
    tree = ast.parse((ROOT / "tracker" / "__init__.py").read_text())
    defined = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
    } | {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert defined == set()


def test_the_service_does_not_import_the_simulator_but_to_run_it() -> None:
    """Only `tracker simulate` reaches into lumasim; nothing the web app or worker runs does."""
    edges = graph("tracker", "lumasim")
    users = sorted(
        m
        for m, targets in edges.items()
        if m.startswith("tracker") and any(t.startswith("lumasim") for t in targets)
    )
    assert users == ["tracker.cli.processes"]
    assert not (ROOT / "tracker" / "simulator.py").exists()


def test_tracker_assets_hold_the_dashboards_files_only(
    make_settings: Callable[..., Settings],
) -> None:
    from tracker.web.app import create_app

    app: Flask = create_app(make_settings())
    client = app.test_client()
    assert client.get("/assets/dashboard.css").status_code == 200
    for name in ("sample.mp4", "sample.jpg"):
        assert client.get(f"/assets/{name}").status_code == 404
    static = ROOT / "tracker" / "web" / "static"
    assert sorted(p.name for p in static.iterdir()) == [
        "dashboard.css",
        "dashboard.js",
        "favicon.svg",
    ]


def test_no_test_file_imports_another() -> None:
    """Test files, conftest.py and the helpers import shared code from tests/support only."""
    wrong = {
        str(path.relative_to(ROOT)): names
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if (names := foreign_test_imports(path))
    }
    assert wrong == {}


def test_the_import_check_sees_a_test_importing_a_test(tmp_path: Path) -> None:
    path = tmp_path / "test_x.py"
    path.write_text(
        "from tests.test_media import SAMPLE\n"
        "from tests.support.media import SAMPLE_JPG\n"
        "def f():\n    import tests.conftest\n    from . import test_y\n"
    )
    assert foreign_test_imports(path) == ["tests.test_media", "tests.conftest", "."]


def _python(code: str, cwd: Path | None = None, python: str = sys.executable) -> str:
    result = subprocess.run(
        [python, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    [
        "tracker.flows.worker",
        "tracker.cli",
        "tracker.cli.dev",
        "tracker.flows.services",
        "lumasim.simulator",
    ],
)
def test_the_worker_and_the_cli_do_not_import_flask(module: str) -> None:
    _python(f"import {module}, sys; assert 'flask' not in sys.modules, '{module} imports Flask'")


@pytest.mark.slow
def test_settings_load_nothing_that_gevent_patches() -> None:
    """gunicorn's master checks the settings (gunicorn.conf.py's on_starting) before gevent
    patches its workers: tracker.settings must stay standard-library only."""
    _python(
        "import sys, tracker.settings; "
        "bad = [m for m in ('flask', 'requests', 'urllib3', 'ssl', 'sqlalchemy', 'psycopg',"
        " 'prometheus_client') if m in sys.modules]; assert not bad, bad"
    )


@pytest.mark.slow
def test_cli_commands_but_the_web_run_without_flask(tmp_path: Path) -> None:
    """`tracker poll --once` (a worker pass) and `tracker list` never load the web stack."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}", "LUMA_API_KEY": ""}
    code = """
        import sys
        from click.testing import CliRunner
        from tracker import cli
        runner = CliRunner()
        for args in (["db", "upgrade"], ["poll", "--once"], ["list"]):
            result = runner.invoke(cli.main, args, catch_exceptions=False)
            assert result.exit_code == 0, (args, result.output)
        assert "flask" not in sys.modules
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_a_plain_install_runs_the_simulator_serving_its_own_media(tmp_path: Path) -> None:
    """Built as `pip install .` builds it (no -e): lumasim and its samples are in the wheel.

    The wheel goes into a fresh venv without its dependencies, which come from this test's
    own environment through a .pth file: no index is asked for them, and the copy of the
    tracker imported is the installed one, not this source tree.
    """
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lumasim/samples/sample.mp4" in names and "lumasim/samples/sample.jpg" in names
    assert not [n for n in names if n.startswith("tracker/web/static/sample")]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python, tracker = str(venv / "bin" / "python"), str(venv / "bin" / "tracker")
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    purelib = _python("import sysconfig; print(sysconfig.get_paths()['purelib'])", python=python)
    Path(purelib.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    away = tmp_path / "elsewhere"  # not the source tree: only the installed copy is importable
    away.mkdir()
    shown = _python(
        """
        import requests, tracker, lumasim.media as media
        from lumasim.simulator import Simulator
        sim = Simulator(processing_after=0, complete_after=0).start()
        made = requests.post(f"{sim.url}/luma/generations", json={"user_prompt": "a fox"}).json()
        video = requests.get(f"{sim.url}/luma/generations/{made['id']}").json()["video"]["url"]
        served = requests.get(video)
        sim.stop()
        print(tracker.__file__, media.__file__)
        sample = media.SAMPLE_MP4.read_bytes()
        print(video.startswith(sim.url + "/files/"), served.content == sample)
        print(served.headers["Content-Type"], len(served.content))
        """,
        cwd=away,
        python=python,
    )
    assert shown.count(str(venv)) == 2, shown  # the installed copies, not this tree
    assert "True True\nvideo/mp4 14015" in shown, shown
    helped = subprocess.run(
        [tracker, "simulate", "--help"], capture_output=True, text=True, cwd=away, timeout=60
    )
    assert helped.returncode == 0 and "Run the simulated upstream" in helped.stdout
