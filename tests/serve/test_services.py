"""The service fixtures of tests/serve/conftest.py work: PostgreSQL, Chromium via Playwright, a server process."""

from __future__ import annotations

import http.server
import sys
import threading
import urllib.request

import pytest
import sqlalchemy

pytestmark = pytest.mark.network


def test_postgres_db_url_is_a_fresh_database(postgres_db_url, postgres_url):
    assert postgres_db_url.startswith("postgresql+psycopg2://") and postgres_db_url != postgres_url
    engine = sqlalchemy.create_engine(postgres_db_url)
    try:
        with engine.begin() as conn:
            tables = sqlalchemy.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            assert conn.execute(tables).scalar() == 0
            conn.execute(sqlalchemy.text("CREATE TABLE item (id serial PRIMARY KEY, name text NOT NULL)"))
            conn.execute(sqlalchemy.text("INSERT INTO item (name) VALUES (:a), (:b)"), {"a": "brush", "b": "easel"})
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("SELECT id, name FROM item ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "brush"), (2, "easel")]
    finally:
        engine.dispose()


def test_postgres_url_is_shared_and_usable(postgres_url):
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT current_database()")).scalar() == "atelier"
            assert conn.execute(sqlalchemy.text("SHOW server_encoding")).scalar() == "UTF8"
    finally:
        engine.dispose()


PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>fixture check</title></head>
<body>
  <button id="go" onclick="document.getElementById('out').textContent = 'clicked'">Go</button>
  <p id="out">waiting</p>
</body></html>
"""


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def html_site(free_port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _PageHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_page_clicks_a_button_and_takes_a_screenshot(page, html_site, tmp_path):
    from playwright.sync_api import expect

    page.goto(html_site)
    assert page.title() == "fixture check"
    expect(page.locator("#out")).to_have_text("waiting")
    page.click("#go")
    expect(page.locator("#out")).to_have_text("clicked")
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# A stand-in for `atelier serve`: answers /healthz, prints a one-time token on its first start (a marker file
# in the folder given as argv[2] remembers it), and "ready on PORT" on every start.
STAND_IN = r"""
import http.server, pathlib, secrets, sys
port, state = int(sys.argv[1]), pathlib.Path(sys.argv[2])
marker = state / "initialised"
if not marker.exists():
    marker.write_text("yes")
    print("admin token:", secrets.token_hex(8))
else:
    print("already initialised")

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/healthz" else b"hello"
        self.send_response(200 if self.path in ("/healthz", "/") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        print("request", self.path, file=sys.stderr)

server = http.server.HTTPServer(("127.0.0.1", port), Handler)
print("ready on", port)
server.serve_forever()
"""


def _get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return response.status, response.read()


def test_server_process_starts_reads_output_and_restarts(server_process, free_port, tmp_path):
    port = free_port()
    server = server_process([sys.executable, "-c", STAND_IN, str(port), str(tmp_path)], port, timeout=20)
    assert server.url == f"http://127.0.0.1:{port}"
    token = server.wait_for_output(r"admin token: ([0-9a-f]{16})").group(1)
    assert _get(server.url + "/") == (200, b"hello")
    assert "request /healthz" in server.error_output()
    first_pid = server.process.pid

    server.restart()
    assert server.process.pid != first_pid and server.process.poll() is None
    assert _get(server.url + "/healthz") == (200, b"ok")
    server.wait_for_output("ready on")
    assert "already initialised" in server.output() and token not in server.output()
    assert token in server.output(all_runs=True)

    assert server.stop() is not None and server.process.poll() is not None


def test_server_process_reports_an_early_exit(server_process, free_port):
    script = "import sys; print('bad config: no such option', file=sys.stderr); sys.exit(3)"
    with pytest.raises(pytest.fail.Exception, match="bad config: no such option"):
        server_process([sys.executable, "-c", script], free_port(), timeout=20)
