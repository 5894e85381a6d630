"""The studio's API in-process: access control walked over every route, operations, jobs, ratings."""

from __future__ import annotations

import asyncio
import io
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from fastapi.testclient import TestClient

from atelier.models.registry import create_model
from atelier.pipelines import Pipeline
from atelier.serve import auth
from atelier.serve.app import ANY_SCOPE, PUBLIC, create_app
from atelier.serve.batching import DynamicBatcher, GenerateRequest
from atelier.serve.db import Database, Job, Token
from atelier.serve.settings import SCOPES, ServeConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("studio") / "models"
    torch.manual_seed(0)
    made = {
        "cgan": create_model("dcgan", g_width=8, d_width=8, latent_dim=8, num_classes=10),
        "gan": create_model("dcgan", g_width=8, d_width=8, latent_dim=8),
        "vae": create_model("vae", width=8, hidden=0, latent_dim=4),
        "cyclegan": create_model("cyclegan", resolution=16, channels_a=1, channels_b=3, g_width=4, d_width=4,
                                 n_blocks=1),
        "style": create_model("transformer-net", width=4, n_res_blocks=1),
        "flow": create_model("flow", width=8, levels=2, num_classes=10, sample_steps=2, sampler="euler"),
    }
    for name, model in made.items():
        model.save_pretrained(root / name)
    return root


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def studio(request, models, tmp_path_factory):
    """The studio on each database it supports: every test that uses it runs on SQLite and on PostgreSQL."""
    home = tmp_path_factory.mktemp("home")
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        name = f"studio_{home.name.replace('-', '_').lower()}"
        server.create_database(name)
        db_url = server.url(name)
    else:
        db_url = str(home / "studio.sqlite")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATELIER_HOME", str(home))
        # the route walk presents ~80 bad tokens: the failed-login limit has its own test
        cfg = ServeConfig(models=(str(models),), db=db_url, workers=1, jobs_per_user=2, queue_size=4, max_n=32,
                          failed_logins="100000/minute")
        db = Database(cfg.db_url)
        tokens = {"admin": auth.create_token(db, "admin", ["admin"]).token}
        everything = [s for s in SCOPES if s != "admin"]
        tokens["alice"] = auth.create_token(db, "alice", everything).token
        tokens["bob"] = auth.create_token(db, "bob", everything).token
        for scope in everything:  # alice's tokens that lack one scope each
            tokens[f"no-{scope}"] = auth.create_token(db, "alice", [s for s in everything if s != scope]).token
        tokens["cgan-only"] = auth.create_token(db, "carol", everything, models=["cgan"]).token
        app = create_app(cfg, db=db)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, tokens, db, app
        db.dispose()


def bearer(tokens, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}"}


def png(c, tokens, model="gan", n=1) -> bytes:
    r = c.post(f"/v1/models/{model}/generate", json={"n": n}, headers=bearer(tokens, "alice"))
    assert r.status_code == 200, r.text
    return r.content


def wait_job(c, headers, job_id: str, timeout: float = 60) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        job = c.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


# -- access control over every route ---------------------------------------------------------------------


def _routes(app):
    for route in app.routes:
        if not hasattr(route, "methods"):
            continue
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            scope = (getattr(route, "openapi_extra", None) or {}).get("x-scope")
            yield method, route.path, scope


@pytest.fixture(scope="module")
def objects(studio):
    """alice's job and rating question, and the values that fill every route's path."""
    c, tokens, db, app = studio
    h = bearer(tokens, "alice")
    job = c.post("/v1/jobs", json={"kind": "generate", "model": "gan", "params": {"n": 8}}, headers=h).json()["id"]
    wait_job(c, h, job)
    task = c.post("/v1/ratings/pairs", json={}, headers=h).json()["id"]
    return {"job_id": job, "task_id": task, "name": "cgan", "side": "left", "key_id": "000000000000",
            "path": "app.js"}


def _fill(path: str, values: dict) -> str:
    path = path.replace("{path:path}", values["path"])
    if path.startswith("/docs/"):
        return "/docs/swagger-ui.css"
    if path.endswith("/files/{name}"):
        return path.replace("{job_id}", values["job_id"]).replace("{name}", "samples.png")
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def test_every_route_but_the_public_ones_needs_a_token(studio, objects) -> None:
    c, tokens, db, app = studio
    walked = 0
    for method, path, scope in _routes(app):
        url = _fill(path, objects)
        r = c.request(method, url, json={})
        if (method, path) in PUBLIC:
            assert r.status_code != 401, (method, path)
            continue
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "unauthenticated"
        assert r.headers.get("www-authenticate") == "Bearer"
        bad = c.request(method, url, json={}, headers={"Authorization": "Bearer atl_000000000000_" + "x" * 43})
        assert bad.status_code == 401, (method, path)
        walked += 1
    assert walked >= 30  # the walk covered the API, not an empty list


def test_every_route_declares_a_scope_and_refuses_tokens_without_it(studio, objects) -> None:
    c, tokens, db, app = studio
    checked = set()
    for method, path, scope in _routes(app):
        if (method, path) in PUBLIC and scope is None:
            continue
        if scope == ANY_SCOPE:  # one's own session: any valid token (checked by the 401 walk)
            continue
        assert scope in SCOPES, f"{method} {path} declares no scope"
        if scope == "admin":
            r = c.request(method, _fill(path, objects), json={}, headers=bearer(tokens, "alice"))
        else:
            r = c.request(method, _fill(path, objects), json={}, headers=bearer(tokens, f"no-{scope}"))
        assert r.status_code == 403, (method, path, scope, r.status_code, r.text)
        assert r.json()["error"]["code"] == "forbidden"
        checked.add(scope)
    assert checked == set(SCOPES)


def test_another_users_objects_answer_404_like_missing_ones(studio, objects) -> None:
    c, tokens, db, app = studio
    seen = 0
    for method, path, scope in _routes(app):
        if "{job_id}" not in path and "{task_id}" not in path:
            continue
        url = _fill(path, objects)
        body = {"answer": "left"} if path.endswith("/vote") else {}
        theirs = c.request(method, url, json=body, headers=bearer(tokens, "bob"))
        missing = c.request(method, _fill(path, objects | {"job_id": "x" * 32, "task_id": "y" * 32}), json=body,
                            headers=bearer(tokens, "bob"))
        assert theirs.status_code == 404 == missing.status_code, (method, path, theirs.text)
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
        seen += 1
    assert seen >= 7  # status, cancel, preview, files, events; a question's images and its vote
    # and the owner does see them
    assert c.get(f"/v1/jobs/{objects['job_id']}", headers=bearer(tokens, "alice")).status_code == 200


def test_a_token_limited_to_models_sees_only_those(studio) -> None:
    c, tokens, db, app = studio
    h = bearer(tokens, "cgan-only")
    assert [m["name"] for m in c.get("/v1/models", headers=h).json()] == ["cgan"]
    assert c.post("/v1/models/gan/generate", json={"n": 1}, headers=h).status_code == 404
    assert c.post("/v1/models/cgan/generate", json={"n": 1}, headers=h).status_code == 200


def test_tokens_are_stored_only_as_hashes_and_expire_and_revoke(studio) -> None:
    c, tokens, db, app = studio
    with db.session() as s:
        stored = [t.secret_hash for t in s.scalars(sa.select(Token))]
    for token in tokens.values():
        secret = token.split("_", 2)[2]  # atl_<key id>_<secret>: the secret itself may hold "_"
        assert len(secret) == 43 and all(secret not in h for h in stored)
        assert auth.digest(secret) in stored  # what is kept is its digest
    from datetime import timedelta

    short = auth.create_token(db, "dave", ["read"], expires_in=timedelta(seconds=-1))
    expired = c.get("/v1/models", headers={"Authorization": f"Bearer {short.token}"})
    assert expired.status_code == 401, expired.text
    fresh = auth.create_token(db, "dave", ["read"])
    h = {"Authorization": f"Bearer {fresh.token}"}
    ok = c.get("/v1/models", headers=h)
    assert ok.status_code == 200, ok.text
    assert auth.revoke_token(db, fresh.key_id)
    revoked = c.get("/v1/models", headers=h)
    assert revoked.status_code == 401, revoked.text
    # a right key id with a wrong secret is refused too
    forged = f"atl_{fresh.key_id}_" + "A" * 43
    assert auth.authenticate(db, forged) is None


def test_web_session_cookie_flags_and_csrf(studio) -> None:
    c, tokens, db, app = studio
    r = c.post("/v1/session", json={"token": tokens["alice"]})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    csrf = r.json()["csrf"]
    session = c.cookies.get("atelier_session")
    try:
        assert c.get("/v1/session").json()["principal"] == "alice"  # the cookie alone reads
        refused = c.post("/v1/models/gan/generate", json={"n": 1})  # but does not change state without CSRF
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf"
        wrong = c.post("/v1/models/gan/generate", json={"n": 1}, headers={"X-CSRF-Token": "0" * 64})
        assert wrong.status_code == 403
        ok = c.post("/v1/models/gan/generate", json={"n": 1}, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
        assert c.delete("/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 200
        c.cookies.set("atelier_session", session)
        assert c.get("/v1/session").status_code == 401  # the session ended server-side
    finally:
        c.cookies.clear()
    assert c.post("/v1/session", json={"token": "atl_nope"}).status_code == 401


# -- operations ------------------------------------------------------------------------------------------


def test_generate_matches_the_pipeline_and_formats(studio, models) -> None:
    c, tokens, db, app = studio
    h = bearer(tokens, "alice")
    r = c.post("/v1/models/cgan/generate", json={"n": 6, "seed": 5, "label": 3, "format": "npz"}, headers=h)
    assert r.status_code == 200
    got = np.load(io.BytesIO(r.content))
    expected = Pipeline.load(models / "cgan").sample(6, seed=5, label=3)
    assert np.array_equal(got["images"], expected.permute(0, 2, 3, 1).numpy())
    assert got["labels"].tolist() == [3] * 6
    z = c.post("/v1/models/cgan/generate", json={"n": 4, "format": "zip"}, headers=h)
    assert len(zipfile.ZipFile(io.BytesIO(z.content)).namelist()) == 4


@pytest.mark.parametrize("body,status,field", [
    ({"n": 33}, 413, "n"), ({"n": 0}, 422, "n"), ({"n": 2, "label": 10}, 422, "label"),
    ({"n": 2, "truncation": -1}, 422, "truncation"), ({"n": "many"}, 422, "n"), ({"n": 2, "format": "bmp"}, 422, "format"),
])
def test_generate_refuses_bad_requests_with_the_field(studio, body, status, field) -> None:
    c, tokens, db, app = studio
    r = c.post("/v1/models/cgan/generate", json=body, headers=bearer(tokens, "alice"))
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field and r.json()["error"]["message"]


def test_interpolation_traversal_and_family_refusals(studio) -> None:
    c, tokens, db, app = studio
    h = bearer(tokens, "alice")
    gif = c.post("/v1/models/cgan/interpolate", json={"classes": [1, 7], "steps": 5, "format": "gif"}, headers=h)
    assert gif.status_code == 200 and gif.content[:6] in (b"GIF89a", b"GIF87a")
    strip = c.post("/v1/models/gan/interpolate", json={"seeds": [0, 1], "steps": 4}, headers=h)
    assert strip.status_code == 200 and strip.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert c.post("/v1/models/vae/traverse", json={"steps": 5}, headers=h).status_code == 200
    no = c.post("/v1/models/style/generate", json={"n": 1}, headers=h)
    assert no.status_code == 422 and no.json()["error"]["code"] == "unsupported"


def test_uploads_reconstruct_stylize_translate_and_bad_images(studio) -> None:
    c, tokens, db, app = studio
    h = bearer(tokens, "alice")
    image = png(c, tokens)
    recon = c.post("/v1/models/vae/reconstruct", files={"image": ("x.png", image, "image/png")}, headers=h).json()
    assert len(recon["latent"]) == 4 and recon["image_png"]
    styled = c.post("/v1/models/style/stylize", files={"image": ("x.png", image, "image/png")}, headers=h)
    assert styled.status_code == 200 and styled.content[:4] == b"\x89PNG"
    tr = c.post("/v1/models/cyclegan/translate", files={"image": ("x.png", image, "image/png")}, headers=h)
    assert tr.status_code == 200
    junk = c.post("/v1/models/style/stylize", files={"image": ("x.png", b"not an image", "image/png")}, headers=h)
    assert junk.status_code == 422 and "image" in junk.json()["error"]["message"]
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (6000, 5000)).save(buf, format="PNG")  # 30 Mpx declared: refused before decoding
    bomb = c.post("/v1/models/style/stylize", files={"image": ("big.png", buf.getvalue(), "image/png")}, headers=h)
    assert bomb.status_code == 413 and "pixels" in bomb.json()["error"]["message"]


def _tiles(data: bytes, count: int, side: int) -> list[np.ndarray]:
    """The ``count`` tiles of one row of a grid PNG (padding 2, scaled as grid_png scales), at ``side`` px."""
    from PIL import Image

    scale = max(1, 64 // side)
    grid = np.array(Image.open(io.BytesIO(data)))[::scale, ::scale]
    assert grid.shape[1] == count * (side + 2) + 2
    return [grid[2:2 + side, 2 + k * (side + 2):2 + k * (side + 2) + side] for k in range(count)]


def test_flow_edit_and_inpaint_routes(studio) -> None:
    c, tokens, db, app = studio
    h = bearer(tokens, "alice")
    image = png(c, tokens, model="flow")  # a 28 px grey sample
    upload = {"image": ("x.png", image, "image/png")}
    r = c.post("/v1/models/flow/edit", files=upload, data={"strength": "0", "steps": "2"}, headers=h)
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    before, after = _tiles(r.content, 2, 28)
    assert np.array_equal(before, after)  # strength 0 returns the input
    r = c.post("/v1/models/flow/edit", files=upload, data={"strength": "0.9", "label": "3"}, headers=h)
    before, after = _tiles(r.content, 2, 28)
    assert r.status_code == 200 and not np.array_equal(before, after)

    r = c.post("/v1/models/flow/inpaint", files=upload, data={"box": "0,0,0.5,0.5", "n": "3"}, headers=h)
    assert r.status_code == 200, r.text
    holed, *fills = _tiles(r.content, 4, 28)
    assert (holed[:14, :14] == 128).all()
    for fill in fills:  # outside the hole every pixel is the input's
        assert np.array_equal(fill[14:], holed[14:]) and np.array_equal(fill[:, 14:], holed[:, 14:])
    assert not np.array_equal(fills[0], fills[1])  # successive seeds
    from PIL import Image

    buf = io.BytesIO()
    mask = np.zeros((28, 28), np.uint8)
    mask[20:, 20:] = 255
    Image.fromarray(mask).save(buf, format="PNG")
    r = c.post("/v1/models/flow/inpaint", files=upload | {"mask": ("m.png", buf.getvalue(), "image/png")},
               data={"n": "1"}, headers=h)
    holed, fill = _tiles(r.content, 2, 28)
    assert r.status_code == 200 and (holed[20:, 20:] == 128).all() and np.array_equal(fill[:20], holed[:20])

    def refused(route, status, field, **data):
        r = c.post(f"/v1/models/{route}", files=upload, data=data, headers=h)
        assert r.status_code == status, r.text
        if field:
            assert r.json()["error"]["field"] == field
        return r.json()["error"]["message"]

    assert "x0,y0,x1,y1" in refused("flow/inpaint", 422, "box", box="0.5,0.5,0.2,0.9")
    assert "four" in refused("flow/inpaint", 422, "box", box="a,b")
    refused("flow/inpaint", 413, "n", n="33")
    refused("flow/edit", 413, "steps", steps="65")
    refused("flow/edit", 422, None, sampler="rk45")
    refused("flow/edit", 422, "label", label="10")
    assert "cannot edit" in refused("gan/edit", 422, "model")
    assert "cannot inpaint" in refused("vae/inpaint", 422, "model")
    r = c.post("/v1/models/flow/inpaint", files=upload | {"mask": ("m.png", _black(), "image/png")}, headers=h)
    assert r.status_code == 422 and "empty" in r.json()["error"]["message"]


def _black() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, format="PNG")
    return buf.getvalue()


def test_errors_never_show_a_stack_trace(studio) -> None:
    c, tokens, db, app = studio
    r = c.post("/v1/models/cgan/generate", content=b"{not json", headers=bearer(tokens, "alice") |
               {"Content-Type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text
    assert c.get("/v1/nothing", headers=bearer(tokens, "alice")).status_code == 404


# -- dynamic batching --------------------------------------------------------------------------------


def test_dynamic_batching_merges_concurrent_requests_and_keeps_their_images(models) -> None:
    pipe = Pipeline.load(models / "cgan")
    batcher = DynamicBatcher(pipe.model, max_batch=64, max_wait=0.05)
    requests = [GenerateRequest(2, seed, label=seed % 10) for seed in range(12)]

    async def all_at_once():
        return await asyncio.gather(*(batcher.submit(r) for r in requests))

    results = asyncio.run(all_at_once())
    assert batcher.stats.batches < len(requests) and batcher.stats.images == 24
    for r, images in zip(requests, results):
        assert torch.equal(images, pipe.sample(r.n, seed=r.seed, label=r.label))


def test_a_lone_request_does_not_wait_and_a_full_batcher_answers_429(models) -> None:
    pipe = Pipeline.load(models / "gan")
    batcher = DynamicBatcher(pipe.model, max_batch=8, max_wait=2.0, max_pending=8)

    async def lone() -> float:
        start = time.perf_counter()
        await batcher.submit(GenerateRequest(1, 0))
        return time.perf_counter() - start

    assert asyncio.run(lone()) < 1.0  # not the 2 s max_wait: no one else was waiting

    busy = DynamicBatcher(pipe.model, max_batch=8, max_wait=0.01, max_pending=8)

    async def flood():  # 4 x 3 images at once, 8 may wait: the last two are refused, not queued
        return await asyncio.gather(*(busy.submit(GenerateRequest(3, s)) for s in range(4)), return_exceptions=True)

    results = asyncio.run(flood())
    assert [type(r).__name__ for r in results] == ["Tensor", "Tensor", "Overloaded", "Overloaded"]
    assert all(r.shape == (3, 1, 28, 28) for r in results[:2])


# -- jobs --------------------------------------------------------------------------------------------


def test_generate_job_runs_and_its_result_downloads(studio) -> None:
    c, tokens, db, app = studio
    h = bearer(tokens, "alice")
    r = c.post("/v1/jobs", json={"kind": "generate", "model": "cgan", "params": {"n": 300, "format": "npz"}},
               headers=h)
    assert r.status_code == 202 and len(r.json()["id"]) >= 22  # >= 128 random bits, URL-safe
    job = wait_job(c, h, r.json()["id"])
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    data = np.load(io.BytesIO(c.get(job["files"][0]["url"], headers=h).content))
    assert data["images"].shape == (300, 28, 28, 1)
    events = c.get(f"/v1/jobs/{job['id']}/events", headers=h).text
    assert "event: end" in events and '"status": "succeeded"' in events


def test_queue_limits_answer_429_with_retry_after(studio) -> None:
    c, tokens, db, app = studio
    jobs = app.state.studio.jobs
    jobs.stop_workers()  # nothing runs: the queue fills
    try:
        h = bearer(tokens, "bob")
        ids = [c.post("/v1/jobs", json={"kind": "generate", "model": "gan", "params": {"n": 10}}, headers=h)
               for _ in range(3)]
        assert [r.status_code for r in ids] == [202, 202, 429]  # bob may have 2
        assert int(ids[2].headers["retry-after"]) > 0 and ids[2].json()["error"]["code"] == "queue_full"
        for r in ids[:2]:
            assert c.post(f"/v1/jobs/{r.json()['id']}/cancel", headers=h).json()["status"] == "cancelled"
        assert c.get(f"/v1/jobs/{ids[0].json()['id']}", headers=h).json()["status"] == "cancelled"
    finally:
        jobs.start_workers(1)


def test_job_limits_hold_under_concurrent_submissions(studio) -> None:
    from concurrent.futures import ThreadPoolExecutor

    c, tokens, db, app = studio
    jobs = app.state.studio.jobs
    jobs.stop_workers()
    try:
        with db.session() as s:  # the earlier tests' jobs are finished or cancelled
            assert s.scalar(sa.select(sa.func.count()).select_from(Job).where(Job.status == "queued")) == 0
        users = [auth.create_token(db, f"burst{i}", ["generate", "read"]).token for i in range(4)]

        def submit(token: str) -> int:
            return c.post("/v1/jobs", json={"kind": "generate", "model": "gan", "params": {"n": 4}},
                          headers={"Authorization": f"Bearer {token}"}).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(submit, [t for t in users for _ in range(3)]))
        # 4 users x 2 allowed, but the queue holds 4: exactly 4 accepted, whatever the interleaving
        assert codes.count(202) == 4 and codes.count(429) == 8, codes
        with db.session() as s:
            per_owner = s.execute(sa.select(Job.owner_id, sa.func.count()).where(Job.status == "queued")
                                  .group_by(Job.owner_id)).all()
        assert sum(n for _, n in per_owner) == 4 and max(n for _, n in per_owner) <= 2
        with db.session() as s:
            for job in s.scalars(sa.select(Job).where(Job.status == "queued")):
                job.status = "cancelled"
    finally:
        jobs.start_workers(1)


def test_a_running_job_can_be_cancelled(studio) -> None:
    c, tokens, db, app = studio
    h = bearer(tokens, "alice")
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(buf, format="PNG")
    image = buf.getvalue()
    r = c.post("/v1/jobs/gatys", files={"content": ("c.png", image, "image/png"), "style": ("s.png", image, "image/png")},
               data={"steps": "500", "size": "64"}, headers=h)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    end = time.time() + 60
    while not c.get(f"/v1/jobs/{job_id}", headers=h).json()["has_preview"] and time.time() < end:
        time.sleep(0.05)
    preview = c.get(f"/v1/jobs/{job_id}/preview.png", headers=h)  # the image so far, while it runs
    assert preview.status_code == 200 and preview.content[:4] == b"\x89PNG"
    assert c.post(f"/v1/jobs/{job_id}/cancel", headers=h).status_code == 200
    job = wait_job(c, h, job_id)
    assert job["status"] == "cancelled" and job["files"] == []


# -- ratings ------------------------------------------------------------------------------------------


def test_pairwise_votes_once_per_pair_and_the_leaderboard(studio) -> None:
    c, tokens, db, app = studio
    h = bearer(tokens, "alice")
    for _ in range(4):
        task = c.post("/v1/ratings/pairs", json={"models": ["cgan", "vae"]}, headers=h).json()
        assert c.get(task["left"], headers=h).content[:4] == b"\x89PNG"
        assert c.post(f"/v1/ratings/tasks/{task['id']}/vote", json={"answer": "left"}, headers=h).status_code == 200
        again = c.post(f"/v1/ratings/tasks/{task['id']}/vote", json={"answer": "right"}, headers=h)
        assert again.status_code == 409
    bad = c.post("/v1/ratings/pairs", json={}, headers=h).json()["id"]
    assert c.post(f"/v1/ratings/tasks/{bad}/vote", json={"answer": "maybe"}, headers=h).status_code == 422
    rows = {r["model"]: r for r in c.get("/v1/ratings/leaderboard", headers=h).json()["rows"]}
    assert rows["cgan"]["wins"] >= 4 and rows["cgan"]["score"] > rows["vae"]["score"]
    assert rows["cgan"]["low"] <= rows["cgan"]["score"] <= rows["cgan"]["high"]


def test_real_or_generated_and_export_import_round_trip(studio, tmp_path) -> None:
    c, tokens, db, app = studio
    h = bearer(tokens, "alice")
    for _ in range(3):
        task = c.post("/v1/ratings/real", json={"model": "cgan"}, headers=h).json()
        assert c.get(task["image"], headers=h).status_code == 200
        assert c.post(f"/v1/ratings/tasks/{task['id']}/vote", json={"answer": "real"}, headers=h).status_code == 200
    fraction = c.get("/v1/ratings/real-fraction", headers=h).json()
    assert sum(v["n"] for v in fraction["sources"].values()) >= 3
    exported = c.get("/v1/ratings/export", headers=bearer(tokens, "admin")).text.splitlines()
    assert len(exported) >= 7
    from atelier.metrics.ratings import RatingStore
    from atelier.serve.ratings import export_jsonl, import_jsonl

    path = tmp_path / "ratings.jsonl"
    path.write_text("\n".join(exported) + "\n")
    fresh = Database(f"sqlite:///{tmp_path / 'other.sqlite'}")
    assert import_jsonl(fresh, RatingStore(path).load()) == len(exported)
    assert import_jsonl(fresh, RatingStore(path).load()) == 0  # idempotent
    assert list(export_jsonl(fresh)) == [line + "\n" for line in exported]


# -- the schema -----------------------------------------------------------------------------------------


def _schema_diff(url: str) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from atelier.serve.db import Base

    db = Database(url)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    db.dispose()
    return [d for d in diff if not (d[0] == "remove_table" and d[1].name in ("kv", "schedule", "task", "counter"))]


def test_migrations_build_exactly_the_models_schema(tmp_path) -> None:
    assert _schema_diff(f"sqlite:///{tmp_path / 'm.sqlite'}") == []


def test_the_database_works_on_postgresql(postgres_db_url, models) -> None:
    assert _schema_diff(postgres_db_url) == []
    db = Database(postgres_db_url)
    new = auth.create_token(db, "pg", ["read", "generate"])
    assert auth.authenticate(db, new.token).name == "pg"
    cfg = ServeConfig(models=(str(models),), db=postgres_db_url, workers=1)
    app = create_app(cfg, db=db)
    with TestClient(app, raise_server_exceptions=False) as c:
        h = {"Authorization": f"Bearer {new.token}"}
        r = c.post("/v1/jobs", json={"kind": "generate", "model": "gan", "params": {"n": 20, "format": "png"}}, headers=h)
        assert r.status_code == 202
        job = wait_job(c, h, r.json()["id"])
        assert job["status"] == "succeeded"
    with db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Job)) == 1
    db.dispose()


def test_evaluate_shows_the_human_numbers_beside_the_metrics(studio) -> None:
    from atelier.cli import _human_ratings

    c, tokens, db, app = studio
    h = bearer(tokens, "bob")
    task = c.post("/v1/ratings/pairs", json={"models": ["gan", "vae"]}, headers=h).json()
    assert c.post(f"/v1/ratings/tasks/{task['id']}/vote", json={"answer": "both_good"}, headers=h).status_code == 200
    text = _human_ratings(db.url, "gan")
    assert "Bradley-Terry" in text and "<- this model" in text and "gan" in text


@pytest.mark.slow
def test_an_evaluation_job_reports_fid_and_kid(studio) -> None:
    """Slow: the first evaluation fits the digits domain classifier (about a minute on 2 cores)."""
    c, tokens, db, app = studio
    h = bearer(tokens, "alice")
    r = c.post("/v1/jobs", json={"kind": "evaluate", "model": "cgan", "params": {"n": 50, "data": "digits"}}, headers=h)
    assert r.status_code == 202, r.text
    job = wait_job(c, h, r.json()["id"], timeout=900)
    assert job["status"] == "succeeded", job["error"]
    metrics = c.get(job["files"][0]["url"], headers=h).json()
    assert metrics["fid"] > 0 and metrics["kid_mean"] is not None and metrics["provenance"]["n_fake"] == 50


def test_a_runs_checkpoints_can_be_served_and_rated_against_each_other(tmp_path) -> None:
    from atelier.serve.catalog import Catalog
    from atelier.serve.ratings import new_pair

    run = tmp_path / "models" / "run"
    for step in (1, 2):
        create_model("dcgan", g_width=8, d_width=8, latent_dim=8).save_pretrained(run / "checkpoints" / f"step_{step:07d}")
    (run / "checkpoints" / "latest").write_text("step_0000002")
    assert sorted(Catalog.from_folders([tmp_path / "models"]).entries) == ["run"]
    catalog = Catalog.from_folders([tmp_path / "models"], checkpoints=True)
    assert sorted(catalog.entries) == ["run", "run@step_0000001"]
    assert catalog.get("run@step_0000001").checkpoint.name == "step_0000001"
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    principal = auth.create_token(db, "rater", ["rate"])
    who = auth.authenticate(db, principal.token)
    task = new_pair(db, catalog, who.principal_id)
    assert {task.left_model, task.right_model} == {"run", "run@step_0000001"}


def test_encrypted_models_open_with_the_key_and_unsigned_ones_are_refused(tmp_path, monkeypatch) -> None:
    from atelier.protect.envelope import Key, seal_model_dir
    from atelier.protect.signing import generate_keypair, load_public_key, sign_directory
    from atelier.serve.catalog import Catalog

    root = tmp_path / "models"
    key = Key.generate()
    generate_keypair(tmp_path / "signer")
    trusted = [load_public_key(tmp_path / "signer.pub")]
    for name in ("signed", "unsigned", "altered", "plain-for-sealing"):
        create_model("dcgan", g_width=8, d_width=8, latent_dim=8).save_pretrained(
            (tmp_path if name == "plain-for-sealing" else root) / name)
    seal_model_dir(tmp_path / "plain-for-sealing", root / "sealed", key)
    for name in ("signed", "altered", "sealed"):
        sign_directory(root / name, tmp_path / "signer")
    with open(root / "altered" / "config.json", "a") as f:
        f.write(" ")

    from atelier.protect import envelope

    opened = []
    real_open = envelope.open_model
    monkeypatch.setattr(envelope, "open_model", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    everything = Catalog.from_folders([root], key=key)
    assert sorted(everything.entries) == ["altered", "sealed", "signed", "unsigned"]
    sealed = everything.get("sealed")
    assert sealed.sealed and sealed.describe()["encrypted"] and sealed.parameters > 0
    assert everything.pipeline("sealed").sample(2, seed=0).shape == (2, 1, 28, 28)
    assert len(opened) == 1 and sealed.opened_weights is None  # decrypted once; plaintext not kept after the load
    reloaded = Catalog.from_folders([root], key=key)
    reloaded.get("sealed").opened_weights = None  # as for a model too large to keep: decrypted again at load
    assert torch.equal(reloaded.pipeline("sealed").sample(2, seed=0), everything.pipeline("sealed").sample(2, seed=0))

    no_key = Catalog.from_folders([root])
    assert "sealed" not in no_key.entries
    assert any("no key" in r.reason for r in no_key.refused)

    strict = Catalog.from_folders([root], key=key, trusted=trusted)
    assert sorted(strict.entries) == ["sealed", "signed"]
    assert strict.get("signed").signed_by.startswith("ed25519:")
    reasons = {r.path.name: r.reason for r in strict.refused}
    assert "unsigned" in reasons["unsigned"] and "file changed: config.json" in reasons["altered"]


def test_the_audit_trail_records_events_and_finds_any_edit(studio) -> None:
    from atelier.serve import audit
    from atelier.serve.db import AuditRow

    c, tokens, db, app = studio
    h = bearer(tokens, "alice")
    png(c, tokens, "vae")  # loads a model
    done = c.post("/v1/jobs", json={"kind": "generate", "model": "vae", "params": {"n": 4}}, headers=h).json()["id"]
    wait_job(c, h, done)
    app.state.studio.jobs.stop_workers()
    try:
        queued = c.post("/v1/jobs", json={"kind": "generate", "model": "vae", "params": {"n": 4}}, headers=h).json()
        c.post(f"/v1/jobs/{queued['id']}/cancel", headers=h)
    finally:
        app.state.studio.jobs.start_workers(1)
    assert c.post("/v1/session", json={"token": "atl_000000000000_" + "x" * 43}).status_code == 401
    c.post("/v1/session", json={"token": tokens["alice"]})
    c.cookies.clear()
    made = c.post("/v1/tokens", json={"principal": "erin", "scopes": ["read"], "label": "Erin's laptop"},
                  headers=bearer(tokens, "admin")).json()
    c.delete(f"/v1/tokens/{made['key_id']}", headers=bearer(tokens, "admin"))
    trail = c.get("/v1/audit", params={"limit": 1000}, headers=bearer(tokens, "admin")).json()
    assert trail["verified"], trail["problem"]
    actions = [e["action"] for e in trail["events"]]
    for expected in ("login.failed", "login", "token.create", "token.revoke", "model.load", "job.submit",
                     "job.succeeded", "job.cancel"):
        assert expected in actions, expected
    with db.session() as s:  # addresses and free text only as salted hashes
        rows = list(s.scalars(sa.select(AuditRow)))
    text = " ".join(f"{r.address} {r.detail}" for r in rows)
    assert "testclient" not in text and "Erin's laptop" not in text
    assert any(r.action == "model.load" and len(r.detail["sha256"]) == 64 for r in rows)

    def broken() -> str:
        verdict = audit.verify(db)
        assert not verdict.ok
        return verdict.problem

    last = rows[-1].id
    with db.session() as s:  # edit a row in place
        s.execute(sa.update(AuditRow).where(AuditRow.id == 2).values(actor="mallory"))
    assert "row 2 was edited" in broken()
    with db.session() as s:
        s.execute(sa.update(AuditRow).where(AuditRow.id == 2).values(actor=rows[1].actor))
    assert audit.verify(db).ok
    with db.session() as s:  # delete a row
        gone = s.get(AuditRow, 3)
        saved = {k: getattr(gone, k) for k in ("id", "at", "actor", "action", "target", "detail", "address",
                                                 "prev_hash", "row_hash")}
        s.delete(gone)
    assert "missing" in broken()
    with db.session() as s:  # insert a forged row in its place
        s.add(AuditRow(**(saved | {"actor": "mallory", "row_hash": "f" * 64})))
    assert "row 3" in broken()
    with db.session() as s:
        s.execute(sa.delete(AuditRow).where(AuditRow.id == 3))
        s.add(AuditRow(**saved))
    assert audit.verify(db).ok and audit.verify(db).rows >= last


def test_a_flood_of_failed_logins_is_blocked_then_released(models, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATELIER_HOME", str(tmp_path))
    cfg = ServeConfig(models=(str(models),), db=str(tmp_path / "db.sqlite"), workers=0, failed_logins="5/2 seconds",
                      user_rate="20/second")
    db = Database(cfg.db_url)
    good = auth.create_token(db, "frank", ["read"]).token
    with TestClient(create_app(cfg, db=db), raise_server_exceptions=False) as c:
        forged = {"Authorization": "Bearer atl_000000000000_" + "x" * 43}
        codes = [c.get("/v1/models", headers=forged).status_code for _ in range(5)]
        codes += [c.post("/v1/session", json={"token": "atl_nope"}).status_code]
        assert codes == [401] * 5 + [429]
        blocked = c.get("/v1/models", headers={"Authorization": f"Bearer {good}"})  # even a good token, for now
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
        assert blocked.json()["error"]["code"] == "too_many_failed_logins"
        time.sleep(2.2)  # the window frees
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {good}"}).status_code == 200
        # and a per-user request rate, when set
        answers = [c.get("/v1/models", headers={"Authorization": f"Bearer {good}"}).status_code for _ in range(30)]
        assert 429 in answers and answers.count(200) <= 20


def test_quick_generation_has_a_per_user_image_quota(models, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATELIER_HOME", str(tmp_path))
    cfg = ServeConfig(models=(str(models),), db=str(tmp_path / "db.sqlite"), workers=0, generate_rate="40/hour")
    db = Database(cfg.db_url)
    alice = {"Authorization": f"Bearer {auth.create_token(db, 'alice', ['generate']).token}"}
    bob = {"Authorization": f"Bearer {auth.create_token(db, 'bob', ['generate']).token}"}
    with TestClient(create_app(cfg, db=db), raise_server_exceptions=False) as c:
        def gen(who, n):
            return c.post("/v1/models/gan/generate", json={"n": n, "format": "npz"}, headers=who)

        assert [gen(alice, 16).status_code for _ in range(2)] == [200, 200]
        refused = gen(alice, 16)  # 32 used, 16 more would pass 40
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        error = refused.json()["error"]
        assert error["code"] == "image_quota" and "40 per 1 hour" in error["message"] and "job" in error["message"]
        assert gen(alice, 8).status_code == 200  # a refusal charged nothing: 8 still fit
        assert gen(alice, 1).status_code == 429
        assert gen(bob, 16).status_code == 200  # a quota per user, not per server
    with pytest.raises(ValueError, match="generate_rate"):
        ServeConfig(generate_rate="lots")


def test_a_job_whose_worker_keeps_dying_is_failed_not_retried_forever(models, tmp_path, monkeypatch) -> None:
    from atelier.serve import audit
    from atelier.serve.db import AuditRow, Job
    from atelier.serve.jobs import MAX_ATTEMPTS

    monkeypatch.setenv("ATELIER_HOME", str(tmp_path))
    cfg = ServeConfig(models=(str(models),), db=str(tmp_path / "db.sqlite"), workers=0)
    db = Database(cfg.db_url)
    h = {"Authorization": f"Bearer {auth.create_token(db, 'erin', ['generate', 'read']).token}"}
    with TestClient(create_app(cfg, db=db), raise_server_exceptions=False) as c:
        ids = [c.post("/v1/jobs", json={"kind": "generate", "model": "gan", "params": {"n": 10}}, headers=h).json()["id"]
               for _ in range(2)]
        with db.session() as s:  # both were running on a worker that is gone: one on its last allowed attempt
            for job_id, attempts in zip(ids, (MAX_ATTEMPTS, 1)):
                s.execute(sa.update(Job).where(Job.id == job_id).values(status="running", worker="elsewhere:1",
                                                                        heartbeat_at=None, attempts=attempts))
        c.app.state.studio.jobs.recover()
        poison, other = (c.get(f"/v1/jobs/{i}", headers=h).json() for i in ids)
        assert poison["status"] == "failed" and f"interrupted {MAX_ATTEMPTS} times" in poison["error"]
        assert other["status"] == "queued" and "queued again" in other["message"]
        with db.session() as s:
            actions = {(r.target, r.action) for r in s.scalars(sa.select(AuditRow))}
        assert (ids[0], "job.failed") in actions and (ids[1], "job.requeue") in actions
        assert audit.verify(db).ok
