"""Path traversal, attacked from every side: the names a client puts in a URL, in an upload or in a zip,
and the links a models folder may hold. Nothing outside the studio's roots is read, served or written.

* Every route with a path parameter, listed from the running server's OpenAPI schema (and the app's
  routes the schema leaves out: the page's static files, the API documentation's assets), gets each
  payload of :data:`PAYLOADS` in each parameter as raw bytes on a socket, so that no client library
  normalises them away: ``../``, ``%2e%2e%2f``, double encoding, backslashes, absolute paths, NUL bytes,
  overlong UTF-8 and the names of models refused for leading outside. Each answer is a JSON refusal
  (404/405/422; 400 only from the HTTP parser for bytes no URL may hold), never a 5xx, never a file.
  A parametrised route the walk does not reach fails the test, so a new route is covered by itself.
* Every upload route (from the schema: multipart forms with files) gets hostile file names, and a
  translate job a zip whose members are named ``../../..``, absolute, with backslashes: no file
  appears anywhere, and no name in the result is a path.
* ``atelier serve --models ROOT --checkpoints`` with links out of ROOT (a model folder, a checkpoint
  inside a run, a weights file, a folder of models, a run's metrics) and a ``checkpoints/latest``
  pointer naming a folder elsewhere: none of them is served, each is said to be refused, and why.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import sys
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from atelier.models.registry import create_model

pytestmark = [pytest.mark.network, pytest.mark.usefixtures("one_torch_thread")]

MARKER = "atelier-secret-" + uuid.uuid4().hex  # in the files outside the roots: no answer may hold it

#: What goes in a path parameter, as raw bytes of the request target. ``{up}`` is the way from the models
#: folder to the secret file next to it; ``{abs}`` that file's absolute path (percent-encoded).
PAYLOADS = [
    "..", ".", "...", "../../../../../../etc/passwd", "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd", "%2e%2e", ".%2e", "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "..%255c..%255c", "..%5c..%5c..%5cetc%5cpasswd", "..\\..\\..\\etc\\passwd", "%2fetc%2fpasswd", "/etc/passwd",
    "C:%5cWindows%5cwin.ini", "secret.txt%00.png", "%00", "..%00%2f", "%c0%ae%c0%ae%c0%af", "....//....//etc/passwd",
    "{up}", "{abs}", "{up_encoded}",
    # the names the refused models would have had, and RUN@CHECKPOINT names that climb out of the run
    "linked", "pointer", "halfway", "run@step_0000009", "run@..%2f..%2foutside%2fevil", "run@../../outside/evil",
    "run@%2e%2e", "cgan%00", "cgan%2f..%2f..%2foutside%2fsecret.txt",
]
#: A valid value for each path parameter, so that one payload at a time is what the route sees.
FILLERS = {"name": "cgan", "side": "left", "key_id": "000000000000", "path": "app.js"}


def _png(side: int = 16, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict[str, Path]:
    """``models/`` (served) beside ``outside/`` (never served or read), with every kind of link between."""
    base = tmp_path_factory.mktemp("attacks")
    models, outside = base / "models", base / "outside"
    torch.manual_seed(0)
    tiny = dict(g_width=8, d_width=8, latent_dim=8)
    create_model("dcgan", num_classes=10, **tiny).save_pretrained(models / "cgan")
    for step in (1, 2):
        create_model("dcgan", **tiny).save_pretrained(models / "run" / "checkpoints" / f"step_{step:07d}")
    (models / "run" / "checkpoints" / "latest").write_text("step_0000002\n")
    # a complete checkpoint a killed training run left as a hidden temporary: not a model to serve either
    create_model("dcgan", **tiny).save_pretrained(models / "run" / "checkpoints" / ".step_0000003.tmpab12")
    outside.mkdir()
    (outside / "secret.txt").write_text(MARKER)
    (outside / "numbers.json").write_text(json.dumps({"fid": 1234.5}))
    create_model("dcgan", **tiny).save_pretrained(outside / "evil")
    (outside / "evil" / "notes.txt").write_text(MARKER)
    create_model("dcgan", **tiny).save_pretrained(outside / "more" / "evil2")
    (models / "linked").symlink_to(outside / "evil", target_is_directory=True)  # a model folder
    (models / "run" / "checkpoints" / "step_0000009").symlink_to(outside / "evil", target_is_directory=True)
    (models / "run" / "metrics.json").symlink_to(outside / "numbers.json")  # a run's metrics
    (models / "deep").mkdir()
    (models / "deep" / "link").symlink_to(outside / "more", target_is_directory=True)  # a folder of models
    create_model("dcgan", **tiny).save_pretrained(models / "halfway")  # its weights are somebody else's
    (models / "halfway" / "model.safetensors").unlink()
    (models / "halfway" / "model.safetensors").symlink_to(outside / "evil" / "model.safetensors")
    (models / "pointer" / "checkpoints").mkdir(parents=True)  # a latest pointer climbing out of the run
    (models / "pointer" / "checkpoints" / "latest").write_text("../../../outside/evil\n")
    (models / "secret.txt").symlink_to(outside / "secret.txt")  # a file: never a model, never a page
    return {"base": base, "models": models, "outside": outside}


SERVED = {"cgan", "run", "run@step_0000001"}
REFUSED = {"linked", "step_0000009", "link", "model.safetensors", "pointer"}  # the names of the refused paths


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``roots`` (links not followed): (size, mtime in ns)."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, n))
                out[os.path.join(dirpath, n)] = (st.st_size, st.st_mtime_ns)
    return out


def test_the_catalog_serves_nothing_that_leads_outside_its_folder(tree) -> None:
    from atelier.serve.catalog import Catalog

    catalog = Catalog.from_folders([tree["models"]], checkpoints=True)
    assert set(catalog.entries) == SERVED
    inside = tree["models"].resolve()
    for entry in catalog.entries.values():
        assert entry.checkpoint.resolve().is_relative_to(inside)
        assert all(f.resolve().is_relative_to(inside) for f in entry.checkpoint.iterdir())
    assert "fid" not in catalog.get("run").metrics  # the linked metrics.json was not read
    reasons = {r.path.name: r.reason for r in catalog.refused}
    assert REFUSED <= set(reasons), reasons
    assert all("outside" in reasons[n] and "--models" in reasons[n] for n in REFUSED)
    # what the links lead to is served when it is named as a folder of its own
    assert set(Catalog.from_folders([tree["outside"] / "evil"]).entries) == {"evil"}


# -- raw HTTP against a real server ------------------------------------------------------------------


def _raw(port: int, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    """(status, body) of one request sent byte for byte as given (no client normalises the target)."""
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" \
           f"Content-Length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _multipart(fields: dict[str, tuple[str, bytes] | str], boundary: str = "atelierboundary") -> tuple[bytes, str]:
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            disposition = f'form-data; name="{name}"; filename="{value[0]}"'
            parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/png\r\n\r\n"
                         .encode("latin-1") + value[1] + b"\r\n")
        else:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _routed(status: int, content: bytes) -> bool:
    """Whether a route answered, rather than the router finding none for the path or method."""
    if status not in (404, 405):
        return True
    return json.loads(content)["error"]["message"] not in ("Not Found", "Method Not Allowed")


def _body_for(operation: dict) -> tuple[bytes, dict[str, str]]:
    """A body that passes the operation's validation, so that the route itself sees the path parameters."""
    content = (operation.get("requestBody") or {}).get("content") or {}
    if "application/json" in content:  # unknown fields are ignored: one body for every JSON route
        return json.dumps({"answer": "left"}).encode(), {"Content-Type": "application/json"}
    if "multipart/form-data" in content:
        body, kind = _multipart({k: ("x.png", _png()) for k in ("image", "a", "b", "content", "style", "images")})
        return body, {"Content-Type": kind}
    return b"", {}


def _hidden_parametrised_routes(folder: Path) -> set[tuple[str, str]]:
    """The app's routes with path parameters that the schema leaves out (include_in_schema=False)."""
    from atelier.serve.app import create_app
    from atelier.serve.catalog import Catalog
    from atelier.serve.settings import ServeConfig

    app = create_app(ServeConfig(db=str(folder / "routes.sqlite"), workers=0), catalog=Catalog([]),
                     start_workers=False)
    return {(m, r.path) for r in app.routes if "{" in r.path and not getattr(r, "include_in_schema", True)
            for m in getattr(r, "methods", ()) if m not in ("HEAD", "OPTIONS")}


@pytest.fixture
def served(tree, server_process, free_port, tmp_path):
    """``atelier serve --models tree/models --checkpoints`` on a fresh SQLite database: (server, token)."""
    port = free_port()
    argv = [sys.executable, "-m", "atelier.cli", "serve", "--models", str(tree["models"]), "--checkpoints",
            "--db", str(tmp_path / "studio.sqlite"), "--port", str(port), "--workers", "1"]
    server = server_process(argv, port, env={"ATELIER_HOME": str(tmp_path / "home")})
    return server, server.wait_for_output(r"admin token: (\S+)").group(1)


def test_no_path_parameter_reaches_outside_the_roots(tree, served, tmp_path) -> None:
    server, token = served
    auth = {"Authorization": f"Bearer {token}"}
    refusals = server.error_output()
    for name in REFUSED:  # the CLI says what it did not serve, and why
        assert re.search(rf"not serving \S*{re.escape(name)}: it leads outside", refusals), refusals
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as c:
        assert {m["name"] for m in c.get("/v1/models").json()} == SERVED
        schema = c.get("/openapi.json").json()
        job = c.post("/v1/jobs", json={"kind": "generate", "model": "cgan", "params": {"n": 4, "format": "png"}})
        job_id = job.json()["id"]
        for _ in range(600):
            state = c.get(f"/v1/jobs/{job_id}").json()
            if state["status"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        assert state["status"] == "succeeded", state
        task_id = c.post("/v1/ratings/pairs", json={}).json()["id"]
    values = FILLERS | {"job_id": job_id, "task_id": task_id}
    file_name = state["files"][0]["name"]
    outside_file = tree["outside"] / "secret.txt"
    up = os.path.relpath(outside_file, tree["models"])
    expand = {"{up}": up, "{abs}": str(outside_file).replace("/", "%2f"), "{up_encoded}": up.replace("/", "%2f")}
    payloads = [expand.get(p, p) for p in PAYLOADS]

    routes = {(method.upper(), path): op for path, item in schema["paths"].items() for method, op in item.items()
              if "{" in path}
    routes |= {route: {} for route in _hidden_parametrised_routes(tmp_path)}
    assert len(routes) >= 18, sorted(routes)  # models/{name}/..., jobs/{job_id}/..., ratings, tokens, static, docs
    assert not _routed(*_raw(server.port, "GET", "/v1/no/such/route", auth))  # the router's own 404 is told apart
    assert not _routed(*_raw(server.port, "PUT", "/v1/models/cgan", auth))
    before = _snapshot(tree["models"], tree["outside"])
    reached: set[tuple[str, str]] = set()
    answers: dict[int, int] = {}
    for (method, path), operation in sorted(routes.items()):
        body, headers = _body_for(operation)
        params = re.findall(r"\{(\w+)(?::path)?\}", path)
        filled = {p: values.get(p, "x") for p in params}
        if path.endswith("/files/{name}"):
            filled["name"] = file_name
        if path.startswith("/docs/"):
            filled["name"] = "swagger-ui.css"
        status, content = _raw(server.port, method, re.sub(r"\{(\w+)(?::path)?\}", lambda m: filled[m.group(1)],
                                                           path), auth | headers, body)
        if _routed(status, content):  # with valid values the route itself answers: the payloads go where meant
            reached.add((method, path))
        for param in params:
            for payload in payloads:
                target = re.sub(r"\{(\w+)(?::path)?\}", lambda m: payload if m.group(1) == param
                                else filled[m.group(1)], path)
                status, content = _raw(server.port, method, target, auth | headers, body)
                answers[status] = answers.get(status, 0) + 1
                where = (method, target, status, content[:300])
                assert MARKER.encode() not in content and b"root:x:0:0" not in content, where
                assert status in (400, 404, 405, 422), where  # refused; never a 5xx, never a file
                if status != 400:  # 400: the HTTP parser's, for bytes no URL may hold (it never reached the app)
                    assert json.loads(content)["error"]["code"], where
    assert reached == set(routes), set(routes) - reached  # every parametrised route was attacked, a new one too
    assert answers.get(404, 0) > len(routes) * 10, answers
    # the same routes do serve what they should: the refusals above were not the only possible answer
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as c:
        assert c.get("/static/app.js").status_code == 200
        assert c.get(f"/v1/jobs/{job_id}/files/{file_name}").content[:4] == b"\x89PNG"
        assert c.get("/v1/models/run@step_0000001").status_code == 200
    assert _snapshot(tree["models"], tree["outside"]) == before  # nothing was written or touched
    assert "Traceback" not in server.error_output()


# -- uploads ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """An in-process studio with a model for every upload route and one job worker."""
    from fastapi.testclient import TestClient

    from atelier.serve import auth
    from atelier.serve.app import create_app
    from atelier.serve.db import Database
    from atelier.serve.settings import ServeConfig

    root = tmp_path_factory.mktemp("uploads")
    torch.manual_seed(0)
    create_model("vae", width=8, hidden=0, latent_dim=4).save_pretrained(root / "models" / "vae")
    create_model("transformer-net", width=4, n_res_blocks=1).save_pretrained(root / "models" / "style")
    create_model("flow", width=4, levels=1, blocks_per_level=1, attention=False, resolution=8,
                 sample_steps=1).save_pretrained(root / "models" / "flow")
    create_model("cyclegan", resolution=16, channels_a=3, channels_b=3, g_width=4, d_width=4,
                 n_blocks=1).save_pretrained(root / "models" / "cyclegan")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATELIER_HOME", str(root / "home"))
        cfg = ServeConfig(models=(str(root / "models"),), db=str(root / "studio.sqlite"), workers=1,
                          jobs_per_user=50, queue_size=50)
        db = Database(cfg.db_url)
        token = auth.create_token(db, "uploader", ["admin"]).token
        with TestClient(create_app(cfg, db=db), raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            yield client, root
        db.dispose()


def _wait(c, job_id: str, timeout: float = 60) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']}")


def _strays(tag: str, *roots: Path) -> list[Path]:
    """Files named with ``tag`` in the places a file name taken as a path would have put one."""
    found = [p for p in Path("/tmp").glob(f"*{tag}*")] + [p for p in Path.cwd().glob(f"*{tag}*")]
    for root in roots:
        found += [p for p in root.rglob(f"*{tag}*")]
    return found


def test_upload_file_names_and_zip_members_never_become_paths(studio, tmp_path) -> None:
    c, root = studio
    tag = "pwned-" + uuid.uuid4().hex[:12]
    hostile = [f"../../../../../../tmp/{tag}-a.png", f"/tmp/{tag}-b.png", f"..\\..\\..\\{tag}-c.png",
               f"%2e%2e%2f%2e%2e%2f{tag}-d.png", f"{tag}-e.png\x00.txt", f"sub/../../{tag}-f.png"]
    schema = c.get("/openapi.json").json()
    uploads = {(method.upper(), path): op for path, item in schema["paths"].items() for method, op in item.items()
               if "multipart/form-data" in ((op.get("requestBody") or {}).get("content") or {})}
    assert len(uploads) >= 6, sorted(uploads)
    accepted: set[tuple[str, str]] = set()
    jobs = []
    for (method, path), op in sorted(uploads.items()):
        form = op["requestBody"]["content"]["multipart/form-data"]["schema"]
        form = schema["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]] if "$ref" in form else form
        files = [k for k, v in form["properties"].items() if "contentMediaType" in v or v.get("format") == "binary"]
        assert files, (path, form)
        for k, model in enumerate(("vae", "style", "cyclegan", "flow")):  # the one whose family does it answers 2xx
            names = {f: hostile[(k + i) % len(hostile)] for i, f in enumerate(files)}
            data = {"steps": "2", "size": "32"} | ({"model": model} if "model" in form["properties"] else {})
            r = c.request(method, path.replace("{name}", model), data=data,
                          files={f: (names[f], _png(16, i), "image/png") for i, f in enumerate(files)})
            assert r.status_code < 500 and "Traceback" not in r.text, (path, r.text)
            for name in names.values():  # a name sent is never echoed back as given
                assert name.encode() not in r.content, (path, name)
            if r.status_code < 300:
                accepted.add((method, path))
                if r.status_code == 202:
                    jobs.append(r.json()["id"])
            else:
                assert r.json()["error"]["code"], (path, r.text)
    assert accepted == set(uploads)  # every upload route took a hostile name and did its work

    # a translate job of a zip whose members climb out, are absolute, use backslashes or hide a NUL
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, name in enumerate(hostile):
            z.writestr(name, _png(16, i))
    r = c.post("/v1/jobs/translate", data={"model": "cyclegan"}, files={"images": ("x.zip", buf.getvalue(),
                                                                                  "application/zip")})
    assert r.status_code == 202, r.text
    jobs.append(r.json()["id"])
    for job_id in jobs:
        job = _wait(c, job_id)
        assert job["status"] == "succeeded", job
        for f in job["files"]:
            assert re.fullmatch(r"[\w.-]+", f["name"]) and ".." not in f["name"], f
            content = c.get(f["url"]).content
            if content[:4] == b"PK\x03\x04":
                members = zipfile.ZipFile(io.BytesIO(content)).namelist()
                assert members and (job_id != jobs[-1] or len(members) == len(hostile)), members
                for m in members:  # a result's name is a plain file name, never the path the upload gave
                    assert re.fullmatch(r"[\w.-]+", m) and ".." not in m and not m.startswith("."), m
    assert _strays(tag, root, tmp_path) == []
