"""SIGKILL in the middle of a job: a real ``atelier serve`` process (and its worker thread) dies at once,
with no chance to clean up, while a Gatys job runs. Started again on the same database, the studio runs
the job again to the end (it is never left "running" forever, nor lost), the audit trail says what
happened and still verifies, the jobs finished before the kill keep their files byte for byte, and the
databases pass their integrity checks."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import sys
import time

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import torch
from PIL import Image

from atelier.cli import main
from atelier.models.registry import create_model

pytestmark = pytest.mark.network


def _rgb_png(side: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _job(c: httpx.Client, job_id: str) -> dict:
    r = c.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _wait(c: httpx.Client, job_id: str, until, timeout: float = 120) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = _job(c, job_id)
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never got there: {job}")


def _row(db_url: str, job_id: str) -> dict:
    """The job's row as the dead server left it, read straight from the database."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT status, progress, worker FROM jobs WHERE id = :id"), {"id": job_id})
            return dict(row.mappings().one())
    finally:
        engine.dispose()


def _integrity(path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill-models")
    torch.manual_seed(0)
    create_model("dcgan", g_width=8, d_width=8, latent_dim=8, num_classes=10).save_pretrained(root / "cgan")
    return root


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_a_job_killed_with_its_server_runs_again_and_nothing_is_lost(database, request, server_process, free_port,
                                                                     models, tmp_path, capsys) -> None:
    if database == "postgresql":
        db = request.getfixturevalue("postgres_db_url")
        db_url = db
    else:
        db = str(tmp_path / "studio.sqlite")
        db_url = f"sqlite:///{db}"
    port = free_port()
    env = {"ATELIER_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "atelier.cli", "serve", "--models", str(models), "--db", db, "--port", str(port),
            "--workers", "1", "--threads", "1"]
    server = server_process(argv, port, env=env)
    token = server.wait_for_output(r"admin token: (\S+)").group(1)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as c:
        # a job finished before the kill, and its file
        done = c.post("/v1/jobs", json={"kind": "generate", "model": "cgan", "params": {"n": 40, "format": "zip"}})
        done_id = done.json()["id"]
        finished = _wait(c, done_id, lambda j: j["status"] not in ("queued", "running"))
        assert finished["status"] == "succeeded", finished
        kept = c.get(finished["files"][0]["url"]).content
        assert kept[:2] == b"PK"
        # a slow one, killed while it runs
        r = c.post("/v1/jobs/gatys", files={"content": ("c.png", _rgb_png(), "image/png"),
                                            "style": ("s.png", _rgb_png(), "image/png")},
                   data={"steps": "200", "size": "48"})
        assert r.status_code == 202, r.text
        slow = r.json()["id"]
        _wait(c, slow, lambda j: j["status"] == "running" and j["progress"] > 0, timeout=60)

    os.killpg(server.process.pid, signal.SIGKILL)  # the server and everything it started, at once
    assert server.process.wait(30) == -signal.SIGKILL
    left = _row(db_url, slow)
    assert left["status"] == "running" and 0 < left["progress"] < 1, left  # the kill landed mid-job
    if database == "sqlite":
        assert _integrity(tmp_path / "studio.sqlite") == "ok" and _integrity(tmp_path / "queue.sqlite") == "ok"

    server.start()  # the same command on the same database
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as c:
        after = _job(c, slow)
        assert after["status"] in ("queued", "running", "succeeded"), after  # taken up again, not stuck
        assert after["progress"] < left["progress"] or after["status"] == "succeeded", (left, after)
        job = _wait(c, slow, lambda j: j["status"] not in ("queued", "running"))
        assert job["status"] == "succeeded" and job["progress"] == 1.0, job
        result = c.get(job["files"][0]["url"])
        assert result.status_code == 200 and result.content[:4] == b"\x89PNG"
        again = _job(c, done_id)
        assert again["status"] == "succeeded" and again["files"] == finished["files"]
        assert c.get(finished["files"][0]["url"]).content == kept  # byte for byte
        trail = c.get("/v1/audit", params={"limit": 1000}).json()
    assert trail["verified"], trail["problem"]
    events = [(e["action"], e["target"]) for e in trail["events"]]
    assert ("job.requeue", slow) in events and ("job.succeeded", slow) in events, events
    assert ("job.succeeded", done_id) in events
    server.stop()
    assert main(["serve", "audit", "verify", "--db", db]) == 0  # what an operator runs after a crash
    assert "the audit trail verifies" in capsys.readouterr().out
    if database == "sqlite":
        assert _integrity(tmp_path / "studio.sqlite") == "ok" and _integrity(tmp_path / "queue.sqlite") == "ok"
    assert "Traceback" not in server.error_output(all_runs=True)
