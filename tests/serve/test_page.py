"""The studio's page in a real Chromium (Playwright): log in, generate, rate with the keyboard, no console errors.

The app runs in-process (uvicorn in a thread, 127.0.0.1, a free port) over four tiny untrained models, once for
the module. The page's CSP forbids inline scripts and styles, so a console with no errors also shows the page
keeps to it (a violation is reported there).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.network

SCREENSHOT_FOR_TEAM = Path("/tmp/studio-page.png")


@dataclass
class Studio:
    url: str
    token: str  # alice: read, generate, stylize, rate
    reader_token: str  # bob: read and rate only


def _wait_healthy(url: str, thread: threading.Thread, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                pytest.fail("the studio's server thread ended before answering /healthz")
            try:
                if client.get(f"{url}/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    pytest.fail(f"no 200 from {url}/healthz within {timeout}s")


@pytest.fixture(scope="module")
def studio(tmp_path_factory, browser):  # browser first: skip (or fail in CI) before building anything
    import torch
    import uvicorn

    from atelier.models.registry import create_model
    from atelier.serve import auth
    from atelier.serve.app import create_app
    from atelier.serve.db import Database
    from atelier.serve.settings import ServeConfig

    root = tmp_path_factory.mktemp("studio")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATELIER_HOME", str(root / "home"))
        torch.manual_seed(0)
        models = {"cgan": create_model("dcgan", g_width=8, d_width=8, latent_dim=8, num_classes=10),
                  "gan": create_model("dcgan", g_width=8, d_width=8, latent_dim=8),
                  "vae": create_model("vae", width=8, hidden=0, latent_dim=4),
                  "style": create_model("transformer-net", width=4, n_res_blocks=1),
                  "flow": create_model("flow", width=8, levels=2, sample_steps=2, sampler="euler")}
        for name, model in models.items():
            model.save_pretrained(root / "models" / name)
        cfg = ServeConfig(models=(str(root / "models"),), db=str(root / "db.sqlite"), workers=1)
        db = Database(cfg.db_url)
        token = auth.create_token(db, "alice", ["read", "generate", "stylize", "rate"]).token
        reader_token = auth.create_token(db, "bob", ["read", "rate"]).token
        app = create_app(cfg, db=db)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, name="studio-server", daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, thread)
            yield Studio(url, token, reader_token)
        finally:
            server.should_exit = True
            thread.join(timeout=15)


def _watch_console(page) -> list[str]:
    """Errors the page reports: console errors (CSP violations, failed loads) and uncaught exceptions."""
    errors: list[str] = []

    def on_console(msg) -> None:
        if msg.type != "error":
            return
        where = (msg.location or {}).get("url", "")
        if "favicon" in where or "favicon" in msg.text:
            return
        errors.append(f"console: {msg.text} ({where})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    return errors


def _login(page, studio: Studio, token: str | None = None) -> None:
    page.goto(studio.url + "/")
    page.locator("#token").fill(token or studio.token)
    page.locator("#login").click()
    page.locator("#app-view").wait_for(state="visible")


def _image_pixels(page, selector: str) -> str:
    """The <img>'s pixels as a data URL (blob: URLs are same-origin, so the canvas is readable)."""
    return page.evaluate("""(sel) => {
        const img = document.querySelector(sel);
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        c.getContext('2d').drawImage(img, 0, 0);
        return c.toDataURL();
    }""", selector)


def test_wrong_token_shows_an_error_and_opens_no_session(page, studio):
    errors = _watch_console(page)
    response = page.goto(studio.url + "/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    page.locator("#login-view").wait_for(state="visible")
    assert page.locator("#app-view").is_hidden()

    for wrong in ("atl_000000000000_" + "x" * 43, "not a token at all"):
        page.locator("#token").fill(wrong)
        page.locator("#token").press("Enter")  # the form submits from the keyboard
        error = page.locator("#login-error")
        error.wait_for(state="visible")
        assert "not accepted" in error.inner_text()
        assert page.locator("#app-view").is_hidden()
    assert not [c for c in page.context.cookies() if c["name"] == "atelier_session"]
    # the only errors: the two refused logins (the browser logs a failed request as an error)
    assert all("401" in e and "/v1/session" in e for e in errors), errors
    assert len(errors) <= 2, errors


def test_generate_and_rate_with_the_keyboard(page, studio, tmp_path):
    errors = _watch_console(page)
    _login(page, studio)
    assert page.locator("#whoami").inner_text() == "alice"
    assert page.locator("#scopes .scope.on").all_inner_texts() == ["read", "generate", "stylize", "rate"]
    session = [c for c in page.context.cookies() if c["name"] == "atelier_session"]
    assert session and session[0]["httpOnly"]

    # the gallery: a card per model, sample grids loaded for the generative ones
    page.locator("#tab-gallery[aria-selected=true]").wait_for()
    assert page.locator("[data-testid=model-card]").count() == 5
    page.wait_for_function("""() => [...document.querySelectorAll('#gallery img')].length === 4
        && [...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)""")

    # generate: the first model's samples at once, then new ones when the seed slider moves (keyboard)
    page.locator("#tab-generate").click()
    image = page.locator("#generate-image")
    page.wait_for_function("""() => { const i = document.querySelector('#generate-image');
        return i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0 && i.dataset.seed === '0'; }""")
    before_src, before = image.get_attribute("src"), _image_pixels(page, "#generate-image")
    page.locator("#gen-seed").focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("""() => { const i = document.querySelector('#generate-image');
        return i.dataset.seed === '3' && i.complete && i.naturalWidth > 0; }""")
    assert image.get_attribute("src") != before_src and image.get_attribute("src").startswith("blob:")
    assert _image_pixels(page, "#generate-image") != before
    assert page.locator("#gen-error").is_hidden()

    # rate three pairs with the arrow keys; the counter and the leaderboard follow
    page.locator("#tab-rate").click()
    area = page.locator("#pair-area")
    page.locator("#pair-area[data-state=ready]").wait_for()
    assert page.locator("#leaderboard-empty").is_visible()
    for i, key in enumerate(["ArrowLeft", "ArrowRight", "ArrowUp"], start=1):
        task = area.get_attribute("data-task")
        page.keyboard.press(key)
        page.wait_for_function("""([n, task]) => document.querySelector('#vote-count').textContent === String(n)
            && document.querySelector('#pair-area').dataset.state === 'ready'
            && document.querySelector('#pair-area').dataset.task !== task""", arg=[i, task])
    assert page.locator("#vote-count").inner_text() == "3"
    for side in ("#pair-left", "#pair-right"):
        assert page.evaluate("(s) => document.querySelector(s).naturalWidth", side) > 0
    # each vote is a comparison counted for both models
    page.wait_for_function("() => document.querySelector('#leaderboard').dataset.votes === '6'")
    assert page.locator("#leaderboard tbody tr").count() >= 2
    assert page.locator("#leaderboard-empty").is_hidden()

    with httpx.Client(trust_env=False, timeout=10) as client:
        board = client.get(f"{studio.url}/v1/ratings/leaderboard",
                           headers={"Authorization": f"Bearer {studio.token}"}).json()
    assert sum(r["votes"] for r in board["rows"]) == 6  # 3 comparisons, two models each
    assert sum(r["wins"] for r in board["rows"]) == 2 and sum(r["ties"] for r in board["rows"]) == 2

    shot = tmp_path / "studio.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    try:
        SCREENSHOT_FOR_TEAM.write_bytes(shot.read_bytes())
    except OSError:
        pass  # a courtesy copy; /tmp may be read-only somewhere
    assert errors == []


def test_session_survives_a_reload_and_logout_ends_it(page, studio):
    errors = _watch_console(page)
    _login(page, studio)
    page.reload()  # GET /v1/session answers from the cookie: no login form
    page.locator("#app-view").wait_for(state="visible")
    assert page.locator("#login-view").is_hidden()
    assert page.locator("#whoami").inner_text() == "alice"

    # state-changing requests carry the session's CSRF token: without it the server refuses
    refused = page.evaluate("""async () => (await fetch('/v1/ratings/pairs', {method: 'POST',
        credentials: 'same-origin', headers: {'Content-Type': 'application/json'}, body: '{}'})).status""")
    assert refused == 403
    errors.clear()  # that refusal was ours

    page.locator("#logout").click()
    page.locator("#login-view").wait_for(state="visible")
    assert not [c for c in page.context.cookies() if c["name"] == "atelier_session"]
    assert errors == []


def test_sections_follow_the_scopes(page, studio):
    errors = _watch_console(page)
    _login(page, studio, studio.reader_token)
    assert page.locator("#whoami").inner_text() == "bob"
    assert page.locator("#scopes .scope.on").all_inner_texts() == ["read", "rate"]
    for tab in ("generate", "interpolate", "stylise"):
        assert page.locator(f"#tab-{tab}").is_disabled()
    for tab in ("gallery", "rate", "jobs"):
        assert page.locator(f"#tab-{tab}").is_enabled()
    page.locator("[data-testid=model-card]").first.wait_for()
    assert page.locator("#gallery button[data-go]").count() == 0  # no "Generate" shortcuts without the scope
    page.locator("#tab-rate").click()
    page.locator("#pair-area[data-state=ready]").wait_for()
    assert errors == []


def _png(width: int, height: int, colour: tuple[int, int, int]) -> dict:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return {"name": "upload.png", "mimeType": "image/png", "buffer": buffer.getvalue()}


@pytest.mark.filterwarnings("ignore:No VGG-19 ImageNet weights")  # offline: Gatys falls back to a random network
def test_interpolate_stylise_reconstruct_and_a_gatys_job(page, studio):
    errors = _watch_console(page)
    _login(page, studio)
    loaded = "(s) => { const i = document.querySelector(s); return i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0; }"

    # the interpolation player: an animated GIF and a strip of frames
    page.locator("#tab-interpolate").click()
    page.locator("#interp-model").select_option("cgan")
    page.locator("#interp-mode").select_option("classes")
    page.wait_for_function(loaded, arg="#interp-gif")
    page.wait_for_function(loaded, arg="#interp-strip")
    page.wait_for_function("() => document.querySelector('#interp-status').textContent.includes('class 0 → 7')")

    # fast style on an upload; the VAE's reconstruction and latent
    page.locator("#tab-stylise").click()
    page.locator("#style-file").set_input_files(_png(48, 40, (200, 90, 40)))
    page.locator("#style-run").click()
    page.wait_for_function(loaded, arg="#style-result")
    page.locator("#recon-file").set_input_files(_png(28, 28, (30, 30, 30)))
    page.locator("#recon-run").click()
    page.locator("#recon-latent li").first.wait_for()
    assert page.locator("#recon-latent li").count() == 4  # latent_dim=4
    assert page.evaluate("document.querySelector('#recon-image').naturalWidth") > 0
    assert page.locator("#translate-none").is_visible()  # no CycleGAN served

    # a flow model's edit of an upload and fills of a hole; a malformed box is explained, not crashed on
    assert page.locator("#edit-model option").all_inner_texts() == ["flow (flow)"]
    page.locator("#edit-file").set_input_files(_png(28, 28, (255, 255, 255)))
    page.locator("#edit-steps").fill("2")
    page.locator("#edit-run").click()
    page.wait_for_function(loaded, arg="#edit-result")
    page.locator("#inpaint-file").set_input_files(_png(28, 28, (90, 90, 90)))
    page.locator("#inpaint-box").fill("0.9,0.9,0.1,0.1")
    page.locator("#inpaint-run").click()
    page.locator("#inpaint-error").wait_for()
    assert "x0,y0,x1,y1" in page.locator("#inpaint-error").inner_text()
    page.locator("#inpaint-box").fill("0,0,0.5,1")
    page.locator("#inpaint-n").fill("2")
    page.locator("#inpaint-run").click()
    page.wait_for_function(loaded, arg="#inpaint-result")
    assert page.locator("#inpaint-error").is_hidden()
    width = page.evaluate("document.querySelector('#inpaint-result').naturalWidth")
    assert width == 2 * (3 * (28 + 2) + 2)  # the holed input and two fills, 2 px gaps, drawn at 2x

    # Gatys as a job: progress over server-sent events, then the result from the job's files
    page.locator("#gatys-content").set_input_files(_png(64, 64, (20, 120, 200)))
    page.locator("#gatys-style").set_input_files(_png(64, 64, (240, 200, 30)))
    page.locator("#gatys-steps").fill("2")
    page.locator("#gatys-size").fill("32")
    page.locator("#gatys-run").click()
    page.wait_for_function("""() => { const i = document.querySelector('#gatys-result');
        return !i.hidden && i.complete && i.naturalWidth > 0; }""", timeout=20_000)
    assert page.evaluate("document.querySelector('#gatys-progress').value") == 1
    assert page.locator("#gatys-error").is_hidden()

    # the job is listed, with its file
    page.locator("#tab-jobs").click()
    row = page.locator("#jobs tbody tr[data-status=succeeded]").first
    row.wait_for()
    assert row.locator("a[href^='/v1/jobs/']").count() >= 1
    assert errors == []
