"""End to end: a real ``atelier serve`` process on 127.0.0.1, started, used, restarted and stopped by the test."""

from __future__ import annotations

import io
import json
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from atelier.models.registry import create_model

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    torch.manual_seed(0)
    create_model("dcgan", g_width=8, d_width=8, latent_dim=8, num_classes=10).save_pretrained(root / "cgan")
    return root


def _rgb_png(side: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _wait(client, job_id: str, until=("succeeded", "failed", "cancelled"), timeout: float = 60) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']}")


def test_serve_generate_stream_cancel_restart_and_fetch(server_process, free_port, model_dir, tmp_path) -> None:
    port = free_port()
    db = tmp_path / "studio.sqlite"
    argv = [sys.executable, "-m", "atelier.cli", "serve", "--models", str(model_dir), "--db", str(db),
            "--port", str(port), "--workers", "1"]
    server = server_process(argv, port, env={"ATELIER_HOME": str(tmp_path / "home")})
    token = server.wait_for_output(r"admin token: (\S+)").group(1)
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        assert [m["name"] for m in c.get("/v1/models").json()] == ["cgan"]
        r = c.post("/v1/models/cgan/generate", json={"n": 4, "seed": 2, "label": 5})
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size[0] > 0

        # a job with progress streamed as server-sent events
        job_id = c.post("/v1/jobs", json={"kind": "generate", "model": "cgan",
                                          "params": {"n": 3000, "format": "npz"}}).json()["id"]
        progress, ended = [], None
        with c.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "progress":
                        progress.append(data["progress"])
                    elif event == "end":
                        ended = data
                        break
        assert ended["status"] == "succeeded" and progress[-1] == 1.0
        assert len(progress) >= 2 and progress == sorted(progress)  # it moved, forward only

        # a long job, cancelled while it runs
        slow = c.post("/v1/jobs/gatys", files={"content": ("c.png", _rgb_png(), "image/png"),
                                              "style": ("s.png", _rgb_png(), "image/png")},
                      data={"steps": "500", "size": "64"}).json()["id"]
        _wait(c, slow, until=("running",))
        assert c.post(f"/v1/jobs/{slow}/cancel").status_code == 200
        assert _wait(c, slow)["status"] == "cancelled"

    # restart: the finished job and its result survive
    server.restart()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        job = c.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded"
        data = np.load(io.BytesIO(c.get(job["files"][0]["url"]).content))
        assert data["images"].shape == (3000, 28, 28, 1)
        assert c.get(f"/v1/jobs/{slow}").json()["status"] == "cancelled"
    assert "admin token" not in server.output()  # the token is printed once, on the first start only
    assert "Traceback" not in server.error_output(all_runs=True)


def test_serve_without_models_says_how_to_get_some(tmp_path) -> None:
    import subprocess

    r = subprocess.run([sys.executable, "-m", "atelier.cli", "serve"], cwd=tmp_path, capture_output=True, text=True,
                       env={"ATELIER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 2 and "make demo" in r.stderr and "Traceback" not in r.stderr


def test_workers_in_other_processes_share_a_postgresql_queue(server_process, free_port, model_dir, tmp_path,
                                                             postgres_db_url) -> None:
    import subprocess

    port = free_port()
    env = {"ATELIER_HOME": str(tmp_path / "home")}
    server = server_process([sys.executable, "-m", "atelier.cli", "serve", "--models", str(model_dir), "--db",
                             postgres_db_url, "--port", str(port), "--workers", "0"], port, env=env)
    token = server.wait_for_output(r"admin token: (\S+)").group(1)
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "atelier.cli", "serve", "worker", "--db", postgres_db_url,
                               "--models", str(model_dir)], stdout=log, stderr=subprocess.STDOUT,
                              env={**__import__("os").environ, **env})
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            job_id = c.post("/v1/jobs", json={"kind": "generate", "model": "cgan",
                                              "params": {"n": 50, "format": "zip"}}).json()["id"]
            job = _wait(c, job_id)
            assert job["status"] == "succeeded", job
            assert c.get(job["files"][0]["url"]).content[:2] == b"PK"
    finally:
        worker.terminate()
        assert worker.wait(30) == 0
        log.close()
    assert "worker" in (tmp_path / "worker.log").read_text()


def test_serve_require_signed_refuses_unsigned_models_and_says_why(tmp_path, model_dir) -> None:
    import subprocess

    from atelier.protect.signing import generate_keypair

    generate_keypair(tmp_path / "signer")
    env = {**__import__("os").environ, "ATELIER_HOME": str(tmp_path)}
    base = [sys.executable, "-m", "atelier.cli", "serve", "--models", str(model_dir), "--db", str(tmp_path / "db")]
    r = subprocess.run([*base, "--require-signed"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "trusted" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*base, "--require-signed", "--trusted", str(tmp_path / "signer.pub")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "not serving" in r.stderr and "unsigned" in r.stderr, r.stderr
