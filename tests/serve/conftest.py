"""Fixtures for the HTTP service's tests: a real PostgreSQL, a real Chromium (Playwright), a server subprocess.

* ``postgres_server`` / ``postgres_url`` (session): a throwaway cluster (initdb in a temp dir, pg_ctl on a free
  port on 127.0.0.1 and a unix socket in that dir, trust auth), torn down at the end of the session.
  ``postgres_url`` is ``postgresql+psycopg2://postgres@127.0.0.1:PORT/atelier``.
* ``postgres_db_url`` (function): the URL of a fresh, empty database on that server, dropped after the test.
* ``browser`` (session): Playwright's sync Chromium, Debian's ``chromium`` binary (Playwright's download is not
  used); ``page`` (function): a page in a new browser context, both closed after the test.
* ``free_port`` (function): the function ``free_port() -> int``, a free TCP port on 127.0.0.1.
* ``server_process`` (function): ``server_process(argv, port, env=None, timeout=60, ...) -> ServerProcess``
  starts ``argv`` as a subprocess, waits for ``GET http://127.0.0.1:PORT/healthz`` to answer 200, and stops it
  after the test; ``.url``, ``.process``, ``.output()``, ``.wait_for_output(regex)``, ``.stop()``, ``.restart()``.

When PostgreSQL's server binaries or Chromium are not installed, the tests that need them are skipped; with
``CI`` or ``ATELIER_REQUIRE_SERVICES=1`` in the environment (``.ci/run`` sets it) they fail instead.

Nothing here imports ``atelier``: the fixtures drive the service from outside, as a process and over HTTP.
Third-party imports (psycopg2, playwright) are inside the fixtures, so a missing one only affects its tests.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root (CI) and containers: Chromium's sandbox needs user namespaces or a setuid helper
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no calls home (no internet here): no stalls, no noise
    "--disable-component-update",
    "--disable-sync",
]


# -- skip locally, fail in CI ----------------------------------------------------------------------------------


def services_required() -> bool:
    """True in CI (``CI`` set to anything but empty/0/false) or with ``ATELIER_REQUIRE_SERVICES=1``."""
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or os.environ.get("ATELIER_REQUIRE_SERVICES") == "1"


def _missing(what: str) -> None:
    """Skip the test for lack of ``what``; fail instead where the services are required (CI)."""
    if services_required():
        pytest.fail(f"{what} (required here: CI or ATELIER_REQUIRE_SERVICES=1 is set)", pytrace=False)
    pytest.skip(what)


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> Callable[[], int]:
    """``free_port()`` -> a free TCP port on 127.0.0.1 (conftest modules cannot be imported by tests)."""
    return _free_port


# -- PostgreSQL -------------------------------------------------------------------------------------------------


def _postgres_bindir() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``: Debian's /usr/lib/postgresql/<highest version>/bin, else PATH."""

    def version(path: str) -> tuple[int, ...]:
        numbers = re.findall(r"\d+", Path(path).parent.parent.name)
        return tuple(int(n) for n in numbers)

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(found)
    for initdb in candidates:
        folder = Path(initdb).resolve().parent
        if os.access(folder / "pg_ctl", os.X_OK) and os.access(folder / "postgres", os.X_OK):
            return folder
    return None


def _as_user(argv: list[str], user: str | None) -> list[str]:
    """``argv`` run as ``user`` (None: as ourselves)."""
    if user is None:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *argv]
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]


def _run(argv: list[str], what: str, timeout: float = 120) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}): {' '.join(argv)}\n{result.stdout}\n{result.stderr}")


@dataclass
class PostgresServer:
    """A running throwaway cluster: trust auth for ``user`` on 127.0.0.1:``port`` and in ``socket_dir``."""

    bindir: Path
    base: Path  # the temp dir: data/ and server.log; also the unix socket's folder
    port: int
    run_as: str | None  # the OS user running the server (``postgres`` when we are root)
    user: str = "postgres"  # the database superuser
    host: str = "127.0.0.1"

    @property
    def socket_dir(self) -> Path:
        return self.base

    def url(self, dbname: str, driver: str = "postgresql+psycopg2") -> str:
        """A SQLAlchemy URL for database ``dbname`` on this server."""
        return f"{driver}://{self.user}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", autocommit: bool = True):
        """A psycopg2 connection to ``dbname`` (autocommit by default: CREATE/DROP DATABASE need it)."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=dbname, connect_timeout=10)
        conn.autocommit = autocommit
        return conn

    def log(self) -> str:
        """What the server wrote to its log so far."""
        path = self.base / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _admin(self, sql: str) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        self._admin(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        # FORCE (PostgreSQL 13+) ends connections a test left open, e.g. a SQLAlchemy pool not disposed
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _postgres_base_dir(run_as: str | None) -> Path:
    """An empty temp dir owned by ``run_as``, in a place that user can reach (pytest's own tmp dirs are 0700)."""
    if run_as is None:
        return Path(tempfile.mkdtemp(prefix="atelier-pg-"))
    account = pwd.getpwnam(run_as)
    for parent in dict.fromkeys([tempfile.gettempdir(), "/tmp", "/var/tmp"]):
        base = Path(tempfile.mkdtemp(prefix="atelier-pg-", dir=parent))
        os.chown(base, account.pw_uid, account.pw_gid)
        probe = subprocess.run(_as_user(["test", "-w", str(base), "-a", "-x", str(base)], run_as))
        if probe.returncode == 0:
            return base
        shutil.rmtree(base, ignore_errors=True)
    pytest.fail(f"no temp dir that the {run_as!r} user can write to (tried {tempfile.gettempdir()}, /tmp, /var/tmp)")


def _start_postgres(bindir: Path, run_as: str | None) -> PostgresServer:
    base = _postgres_base_dir(run_as)
    data = base / "data"
    try:
        _run(
            _as_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                      "--no-locale", "--no-sync", "--no-instructions"], run_as),
            "initdb",
        )
        # Test-only settings: no durability (fast), loopback and our own socket dir only (the default socket dir,
        # /var/run/postgresql, may be missing or not writable), a small footprint.
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{base}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            "shared_buffers": "32MB",
            "logging_collector": "off",
        }
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\n# tests/serve/conftest.py\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between our pick and the server's bind: pick again
            port = _free_port()
            argv = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60",
                    "-o", f"-p {port}", "start"]
            result = subprocess.run(_as_user(argv, run_as), capture_output=True, text=True, timeout=120,
                                    stdin=subprocess.DEVNULL)
            if result.returncode == 0:
                return PostgresServer(bindir=bindir, base=base, port=port, run_as=run_as)
            log = (base / "server.log").read_text(errors="replace") if (base / "server.log").exists() else ""
            last_error = f"{result.stdout}\n{result.stderr}\n{log}"
        pytest.fail(f"pg_ctl start failed 3 times:\n{last_error}")
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


def _stop_postgres(server: PostgresServer) -> None:
    pg_ctl = str(server.bindir / "pg_ctl")
    data = str(server.base / "data")
    try:
        for mode in ("fast", "immediate"):
            argv = _as_user([pg_ctl, "-D", data, "-m", mode, "-w", "-t", "30", "stop"], server.run_as)
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            if result.returncode == 0:
                break
    finally:
        shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster for the session (run as the ``postgres`` OS user when we are root)."""
    bindir = _postgres_bindir()
    if bindir is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: apt-get install postgresql")
    try:
        import psycopg2  # noqa: F401 - the fixtures' client
    except ImportError:
        _missing("psycopg2 is not installed")
    run_as = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _missing("running as root and there is no 'postgres' OS user to run the PostgreSQL server as")
        run_as = "postgres"
    server = _start_postgres(bindir, run_as)
    try:
        yield server
    finally:
        _stop_postgres(server)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql+psycopg2://postgres@127.0.0.1:PORT/atelier``: a database shared by the whole session."""
    postgres_server.create_database("atelier")
    return postgres_server.url("atelier")


@pytest.fixture
def postgres_db_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database for this test alone, dropped after it (open connections ended)."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    postgres_server.create_database(name)
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


# -- Chromium via Playwright ------------------------------------------------------------------------------------


def chromium_path() -> str | None:
    """Debian's ``chromium`` (a shell wrapper around /usr/lib/chromium/chromium), or None."""
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (Playwright's sync API) for the session."""
    executable = chromium_path()
    if executable is None:
        _missing("chromium not found: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS,
                                             timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser):
    """A page in a fresh browser context (no cookies or storage shared between tests)."""
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


# -- the service as a subprocess --------------------------------------------------------------------------------

# 127.0.0.1 never through a proxy, whatever http_proxy says
_LOCAL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of ``GET url``, or None when nothing answers."""
    try:
        with _LOCAL_OPENER.open(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):  # refused, reset, timed out, half-started server
        return None


@dataclass
class ServerProcess:
    """A server subprocess on 127.0.0.1:``port``; stdout/stderr of each run go to files in ``log_dir``."""

    argv: list[str]
    port: int
    env: dict[str, str]
    log_dir: Path
    timeout: float = 60
    health_path: str = "/healthz"
    cwd: str | None = None
    process: subprocess.Popen | None = None
    runs: int = 0
    _files: list = field(default_factory=list)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def _log(self, stream: str, run: int) -> Path:
        return self.log_dir / f"run{run}.{stream}"

    def _read(self, stream: str, all_runs: bool) -> str:
        runs = range(1, self.runs + 1) if all_runs else [self.runs]
        paths = [self._log(stream, r) for r in runs if r > 0]
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def output(self, all_runs: bool = False) -> str:
        """What the server printed to stdout so far in this run (every run since the first: ``all_runs``)."""
        return self._read("stdout", all_runs)

    def error_output(self, all_runs: bool = False) -> str:
        """Its stderr so far, like ``output``."""
        return self._read("stderr", all_runs)

    def wait_for_output(self, pattern: str, timeout: float = 10, stderr: bool = False) -> re.Match:
        """The first match of regex ``pattern`` in this run's stdout (stderr), waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.error_output() if stderr else self.output())
            if match:
                return match
            if time.monotonic() > deadline:
                pytest.fail(f"{pattern!r} not in the server's output after {timeout}s:\n{self._describe()}")
            time.sleep(0.05)

    def _describe(self) -> str:
        code = None if self.process is None else self.process.poll()
        return (f"argv: {self.argv}\nexit code: {code}\n--- stdout ---\n{self.output()}\n"
                f"--- stderr ---\n{self.error_output()}")

    def start(self) -> "ServerProcess":
        """Launch the process and wait until ``GET {url}{health_path}`` answers 200 (fail: its output)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("already running; stop() or restart() it")
        self.runs += 1
        stdout = open(self._log("stdout", self.runs), "wb")
        stderr = open(self._log("stderr", self.runs), "wb")
        self._files += [stdout, stderr]
        self.process = subprocess.Popen(self.argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                        env=self.env, cwd=self.cwd, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited before answering {self.health_path}:\n{self._describe()}")
            if _get_status(self.url + self.health_path) == 200:
                return self
            if time.monotonic() > deadline:
                description = self._describe()
                self.stop()
                pytest.fail(f"no 200 from {self.url}{self.health_path} within {self.timeout}s:\n{description}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL (its whole process group). Returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            try:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # anything left in its session: the process itself if it ignored SIGTERM, workers it started
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        code = process.wait()
        for f in self._files:
            f.close()
        self._files.clear()
        return code

    def restart(self) -> "ServerProcess":
        """Stop, then start again with the same argv, port and environment (a new run: ``output()`` restarts)."""
        self.stop()
        return self.start()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``server_process(argv, port, env=None, timeout=60, health_path="/healthz", cwd=None)`` -> a started
    ``ServerProcess``; every one is stopped after the test.

    ``env`` adds to (does not replace) os.environ; PYTHONUNBUFFERED=1 is set so prints reach the log at once.
    Output files: ``tmp_path/server-N/runK.stdout`` and ``.stderr``."""
    started: list[ServerProcess] = []

    def start(argv: Sequence[str], port: int, env: Mapping[str, str] | None = None, timeout: float = 60,
              health_path: str = "/healthz", cwd: str | os.PathLike | None = None) -> ServerProcess:
        log_dir = tmp_path / f"server-{len(started) + 1}"
        log_dir.mkdir()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        server = ServerProcess(argv=[str(a) for a in argv], port=port, env=full_env, log_dir=log_dir,
                               timeout=timeout, health_path=health_path, cwd=None if cwd is None else str(cwd))
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
