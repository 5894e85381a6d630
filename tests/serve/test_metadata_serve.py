"""Clean metadata in the studio: uploads carrying EXIF/GPS/XMP and PNG text chunks leave no trace in any answer
or anything stored, generated PNGs carry exactly the allowlisted provenance (the model's hash, the seed, never
a token, a user name or a path), and the names uploads give never become paths."""

from __future__ import annotations

import base64
import hashlib
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
from PIL import Image, PngImagePlugin

from atelier.data.provenance import ALLOWED_KEYS, png_chunks, read_provenance
from atelier.models.registry import create_model
from atelier.serve import auth
from atelier.serve.app import create_app
from atelier.serve.db import Database, Job, JobFile
from atelier.serve.settings import SCOPES, ServeConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SECRET = "SECRET-5d1c9a"
PRINCIPAL = "mallory-metadata"
# what must never appear in anything the studio answers or keeps of an upload
MARKERS = (SECRET.encode(), b"http://ns.adobe.com/xap/1.0/", b"Exif\x00\x00", b"ICC_PROFILE")
PIXEL_CHUNKS = {"IHDR", "IDAT", "IEND"}
SAMPLE_KEYS = {"operation", "model_family", "model_name", "weights_sha256", "seed", "n", "software", "version"}


def tagged_jpeg(seed: int = 0) -> bytes:
    """A JPEG with EXIF (orientation, artist, GPS position), an XMP packet, a comment and an ICC profile."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x013B] = f"{SECRET}-artist"
    exif.get_ifd(0x8825).update({1: "N", 2: (51.0, 30.0, 12.0), 3: "W", 4: (0.0, 7.0, 39.0)})
    xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>{SECRET}-xmp</dc:creator></x:xmpmeta>'.encode()
    pixels = np.random.default_rng(seed).integers(0, 256, (36, 48, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90, exif=exif, xmp=xmp,
                                 comment=f"{SECRET}-comment".encode(), icc_profile=f"{SECRET}-icc".encode() * 4)
    assert SECRET.encode() in buf.getvalue() and MARKERS[1] in buf.getvalue()
    return buf.getvalue()


def tagged_png(seed: int = 1) -> bytes:
    """A PNG with tEXt, iTXt (an XMP packet), zTXt and eXIf chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", f"{SECRET}-text")
    info.add_itxt("XML:com.adobe.xmp", f'<x:xmpmeta xmlns:x="adobe:ns:meta/">{SECRET}-xmp</x:xmpmeta>')
    info.add_text("Author", f"{SECRET}-ztxt", zip=True)
    exif = Image.Exif()
    exif[0x013B] = f"{SECRET}-artist"
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", pnginfo=info, exif=exif)
    assert {"tEXt", "iTXt", "zTXt", "eXIf"} <= {kind for kind, _ in png_chunks(buf.getvalue())}
    return buf.getvalue()


def assert_clean(data: bytes, what: str) -> None:
    for marker in MARKERS:
        assert marker not in data, f"{what} holds {marker!r}"


def assert_pixels_only(data: bytes, what: str) -> None:
    assert_clean(data, what)
    assert {kind for kind, _ in png_chunks(data)} <= PIXEL_CHUNKS, what


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("metadata")


@pytest.fixture(scope="module")
def studio(root):
    models = root / "models"
    torch.manual_seed(0)
    made = {
        "gan": create_model("dcgan", g_width=8, d_width=8, latent_dim=8),
        "cgan": create_model("dcgan", g_width=8, d_width=8, latent_dim=8, num_classes=10),
        "vae": create_model("vae", width=8, hidden=0, latent_dim=4),
        "cyclegan": create_model("cyclegan", resolution=16, channels_a=1, channels_b=3, g_width=4, d_width=4,
                                 n_blocks=1),
        "style": create_model("transformer-net", width=4, n_res_blocks=1),
    }
    for name, model in made.items():
        model.save_pretrained(models / name)
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATELIER_HOME", str(home))
        cfg = ServeConfig(models=(str(models),), db=str(home / "studio.sqlite"), workers=1, jobs_per_user=4,
                          queue_size=8, max_n=32)
        db = Database(cfg.db_url)
        token = auth.create_token(db, PRINCIPAL, [s for s in SCOPES if s != "admin"]).token
        with TestClient(create_app(cfg, db=db), raise_server_exceptions=False) as client:
            yield client, {"Authorization": f"Bearer {token}"}, token, db, models, home
        db.dispose()


def wait_job(c, h, job_id: str, timeout: float = 120) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        job = c.get(f"/v1/jobs/{job_id}", headers=h).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def check_record(data: bytes, studio, model: str, **expected) -> dict:
    """The PNG's provenance: the allowlisted keys only, the model's weights hash, and nothing of the caller
    or the server's files anywhere in the PNG."""
    c, h, token, db, models, home = studio
    record = read_provenance(data)
    assert record is not None and set(record) <= ALLOWED_KEYS
    assert record["weights_sha256"] == hashlib.sha256((models / model / "model.safetensors").read_bytes()).hexdigest()
    assert record["model_name"] == model and record["software"] == "atelier"
    for key, value in expected.items():
        assert record[key] == value, key
    for never in (token, token.split("_")[-1], PRINCIPAL, str(models), str(home), str(Path.home())):
        assert never.encode() not in data
    assert not any(isinstance(v, str) and ("/" in v or "\\" in v) for v in record.values())
    assert [kind for kind, _ in png_chunks(data)].count("tEXt") == 1
    assert {kind for kind, _ in png_chunks(data)} <= PIXEL_CHUNKS | {"tEXt"}
    return record


def test_generated_pngs_carry_exactly_the_allowlisted_provenance(studio) -> None:
    c, h, *_ = studio
    r = c.post("/v1/models/gan/generate", json={"n": 4, "seed": 5}, headers=h)
    assert r.status_code == 200, r.text
    record = check_record(r.content, studio, "gan", seed=5, n=4, operation="sample", model_family="gan")
    assert set(record) == SAMPLE_KEYS

    r = c.post("/v1/models/gan/generate", json={"n": 2, "seed": 1, "truncation": 0.5}, headers=h)
    assert set(check_record(r.content, studio, "gan", seed=1, truncation=0.5)) == SAMPLE_KEYS | {"truncation"}

    r = c.post("/v1/models/cgan/generate", json={"n": 3, "seed": 9, "format": "zip"}, headers=h)
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        names = sorted(z.namelist())
        assert len(names) == 3
        for i, name in enumerate(names):
            record = check_record(z.read(name), studio, "cgan", seed=9, n=3, index=i, label=i)
            assert set(record) == SAMPLE_KEYS | {"index", "label"}

    grid = c.get("/v1/models/gan/grid.png", headers=h)
    assert set(check_record(grid.content, studio, "gan", seed=0, n=16)) == SAMPLE_KEYS

    job = c.post("/v1/jobs", json={"kind": "generate", "model": "gan", "params": {"n": 6, "seed": 3, "format": "png"}},
                 headers=h).json()
    job = wait_job(c, h, job["id"])
    assert job["status"] == "succeeded", job
    data = c.get(job["files"][0]["url"], headers=h).content
    assert set(check_record(data, studio, "gan", seed=3, n=6)) == SAMPLE_KEYS


def test_answers_to_uploads_hold_no_trace_of_their_metadata(studio) -> None:
    c, h, *_ = studio
    for data, media in ((tagged_jpeg(), "image/jpeg"), (tagged_png(), "image/png")):
        upload = (f"{SECRET}-name.img", data, media)  # the multipart file name is never echoed either
        recon = c.post("/v1/models/vae/reconstruct", files={"image": upload}, headers=h)
        assert recon.status_code == 200, recon.text
        assert_clean(recon.content, "the reconstruction's answer")
        assert_pixels_only(base64.b64decode(recon.json()["image_png"]), "the reconstruction")
        for path, form in (("/v1/models/style/stylize", {}), ("/v1/models/cyclegan/translate", {"direction": "a2b"})):
            r = c.post(path, files={"image": upload}, data=form, headers=h)
            assert r.status_code == 200, r.text
            assert_pixels_only(r.content, path)
            assert read_provenance(r.content) is None  # a picture of the caller's upload says nothing more
        for fmt in ("png", "gif"):
            r = c.post("/v1/models/vae/interpolate-images", files={"a": upload, "b": upload},
                       data={"steps": "3", "format": fmt}, headers=h)
            assert r.status_code == 200, r.text
            assert_clean(r.content, f"the interpolation ({fmt})")
    bad = c.post("/v1/models/style/stylize", files={"image": (f"../{SECRET}.png", b"\x89PNG broken", "image/png")},
                 headers=h)
    assert bad.status_code == 422 and SECRET not in bad.text and "../" not in bad.text


def test_jobs_keep_only_the_pixels_of_uploads_and_names_never_become_paths(studio, root) -> None:
    c, h, token, db, models, home = studio
    gatys = c.post("/v1/jobs/gatys", files={"content": (f"/home/{SECRET}/c.jpg", tagged_jpeg(), "image/jpeg"),
                                            "style": (f"{SECRET}.png", tagged_png(), "image/png")},
                   data={"steps": "2", "size": "32"}, headers=h)
    assert gatys.status_code == 202, gatys.text

    members = {"../../evil.png": tagged_png(2), "/abs/x.png": tagged_jpeg(3), "C:\\x.png": tagged_png(4),
               f"{SECRET}/sub/photo.jpg": tagged_jpeg(5), "..": tagged_png(6)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    translate = c.post("/v1/jobs/translate", data={"model": "cyclegan", "direction": "a2b"},
                       files={"images": ("../../../up.zip", buf.getvalue(), "application/zip")}, headers=h)
    assert translate.status_code == 202, translate.text

    jobs = {name: wait_job(c, h, r.json()["id"]) for name, r in (("gatys", gatys), ("translate", translate))}
    assert all(job["status"] == "succeeded" for job in jobs.values()), jobs

    out = c.get(jobs["translate"]["files"][0]["url"], headers=h)
    with zipfile.ZipFile(io.BytesIO(out.content)) as z:
        names = z.namelist()
        assert names == ["00000-evil.png", "00001-x.png", "00002-x.png", "00003-photo.png", "00004.png"]
        for name in names:
            assert re.fullmatch(r"\d{5}(-[A-Za-z0-9._-]+)?\.png", name)
            assert_pixels_only(z.read(name), name)
    assert_pixels_only(c.get(jobs["gatys"]["files"][0]["url"], headers=h).content, "the gatys result")
    # nothing was written outside: no file anywhere under the test's folders or here takes an upload's name
    for where in (root, Path.cwd()):
        assert not [p for p in where.rglob("*") if p.name in ("evil.png", "x.png", "up.zip", "photo.jpg")]

    # what the database keeps: the inputs are bare PNGs (in a zip of generated names for the translate job)
    with db.session() as s:
        rows = s.scalars(sa.select(JobFile).where(JobFile.job_id.in_([j["id"] for j in jobs.values()]))).all()
        inputs = {(f.job_id, f.name): f.data for f in rows if f.name.startswith("input-")}
        assert len(inputs) == 3
        for f in rows:
            assert_clean(f.data, f"the stored {f.name}")
        for job in s.scalars(sa.select(Job).where(Job.id.in_([j["id"] for j in jobs.values()]))):
            assert SECRET not in repr((job.params, job.message, job.error))
            if job.preview is not None:
                assert_pixels_only(job.preview, "a preview")
    for (job_id, name), data in inputs.items():
        if name == "input-images":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                assert z.namelist() == ["00000-evil.png", "00001-x.png", "00002-x.png", "00003-photo.png",
                                        "00004.png"]
                for member in z.namelist():
                    assert_pixels_only(z.read(member), member)
        else:
            assert_pixels_only(data, name)
    # and not a byte of any upload's metadata in the database's files (SQLite: the studio's and the queue's)
    for path in home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
