"""The studio's HTTP API (FastAPI): versioned routes over the pipeline façade, jobs and ratings.

Deny by default: every route depends on :func:`require` with a scope, except the few in
:data:`PUBLIC` (the health check, the page's static files, and the login that exchanges a token for a
session). Each route's scope is in the OpenAPI schema (``x-scope``), so the tests can walk every route.
Objects (jobs, rating questions) belong to their creator; anyone else gets 404, exactly as for an
object that does not exist. Errors are JSON ``{"error": {"code", "message", "field"}}``; a bug answers
500 with a reference to the log, never a stack trace.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import zlib
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import Depends, FastAPI, File as FormFile, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from atelier.creative.masks import box_mask, parse_box, upload_mask
from atelier.data.base import DataError
from atelier.serve import audit, auth, job_kinds, ratings as rating_store
from atelier.serve.batching import DynamicBatcher, GenerateRequest, Overloaded
from atelier.serve.catalog import Catalog
from atelier.serve.db import Database, Job, JobFile, RatingTask
from atelier.serve.jobs import ACTIVE, FINISHED, INPUT_PREFIX, JobQueue, QueueFull
from atelier.serve.operations import (UploadTooLarge, check_upload, clean_photo, edited, encode_samples,
                                      generation_provenance, image_interpolation, inpainted, model_image, photo,
                                      reconstruction, strip_and_gif, stylized, translate_inputs, translated, traversal)
from atelier.serve.settings import SCOPES, ServeConfig

log = logging.getLogger("atelier.serve")
SESSION_COOKIE = "atelier_session"
CSRF_HEADER = "x-csrf-token"
#: Routes anyone may call (method, path); everything else needs a token. The login takes the token in its body.
PUBLIC = {("GET", "/healthz"), ("GET", "/"), ("GET", "/static/{path:path}"), ("POST", "/v1/session")}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class ApiError(HTTPException):
    """An error the client should read: status, a stable code, a message, the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers)
        self.code, self.field = code, field


def _error(status: int, code: str, message: str, field: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status,
                        headers=headers)


class RateLimits:
    """Failed logins per client address and (optionally) requests per principal, with the ``limits``
    library's moving windows in this process's memory."""

    def __init__(self, settings: ServeConfig) -> None:
        from limits import parse, storage, strategies

        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self.failed = parse(settings.failed_logins) if settings.failed_logins else None
        self.user = parse(settings.user_rate) if settings.user_rate else None
        self.images = parse(settings.generate_rate) if settings.generate_rate else None

    def _retry_after(self, item, *keys: str) -> str:
        import time

        return str(max(1, int(self._limiter.get_window_stats(item, *keys).reset_time - time.time()) + 1))

    def check_address(self, address: str | None) -> None:
        """429 while ``address`` has used up its failed logins."""
        if self.failed is not None and address and not self._limiter.test(self.failed, "login", address):
            raise ApiError(429, "too_many_failed_logins", "too many failed logins from your address; try again "
                           "later", headers={"Retry-After": self._retry_after(self.failed, "login", address)})

    def failed_login(self, address: str | None) -> None:
        if self.failed is not None and address:
            self._limiter.hit(self.failed, "login", address)

    def request(self, principal: str) -> None:
        if self.user is not None and not self._limiter.hit(self.user, "user", principal):
            raise ApiError(429, "rate_limited", f"more than {self.user} requests for this user; slow down",
                           headers={"Retry-After": self._retry_after(self.user, "user", principal)})

    def generated(self, principal: str, n: int) -> None:
        """Charge ``n`` quick images to ``principal``: 429 (nothing charged) when the window has no room."""
        if self.images is not None and not self._limiter.hit(self.images, "images", principal, cost=n):
            raise ApiError(429, "image_quota", f"{n} more images would pass this user's quick-generation limit of "
                           f"{self.images}; wait, ask for fewer, or submit a generate job (POST /v1/jobs)",
                           headers={"Retry-After": self._retry_after(self.images, "images", principal)})


def charge_images(s: "Studio", who: auth.Identity, n: int) -> None:
    if s.limits is not None:
        s.limits.generated(who.name, n)


@dataclass
class Studio:
    """Everything the routes share."""

    settings: ServeConfig
    db: Database
    catalog: Catalog
    jobs: JobQueue
    batchers: dict[str, DynamicBatcher]
    limits: RateLimits | None = None

    def batcher(self, name: str) -> DynamicBatcher:
        if name not in self.batchers:
            self.batchers[name] = DynamicBatcher(self.catalog.pipeline(name).model, self.settings.max_batch,
                                                 self.settings.max_wait_ms / 1000, self.settings.max_pending)
        return self.batchers[name]


async def studio(request: Request) -> Studio:  # async: no thread-pool hop for a lookup
    return request.app.state.studio


# -- identity and scopes -------------------------------------------------------------------------------


async def identity(request: Request, s: Studio = Depends(studio)) -> auth.Identity:
    who = await _identity(request, s)
    if s.limits is not None:
        s.limits.request(who.name)
    return who


async def _identity(request: Request, s: Studio) -> auth.Identity:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        who = None
        if scheme.lower() == "bearer":  # a recently seen token costs no database round trip
            who = auth.cached_identity(token.strip())
            if who is None:
                address = request.client.host if request.client else None
                if s.limits is not None:
                    s.limits.check_address(address)
                who = await asyncio.to_thread(auth.authenticate, s.db, token.strip())
                if who is None and s.limits is not None:
                    s.limits.failed_login(address)
        if who is None:
            raise ApiError(401, "unauthenticated", "the token is missing, malformed, unknown, expired or revoked",
                           headers={"WWW-Authenticate": "Bearer"})
        return who
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        who = await asyncio.to_thread(auth.session_identity, s.db, session)
        if who is not None:
            if request.method not in SAFE_METHODS and not auth.check_csrf(session, request.headers.get(CSRF_HEADER)):
                raise ApiError(403, "csrf", f"a state-changing request from the page needs the {CSRF_HEADER} header "
                                            "of its session")
            return who
    raise ApiError(401, "unauthenticated", "log in: send Authorization: Bearer <token>, or a session cookie",
                   headers={"WWW-Authenticate": "Bearer"})


def require(scope: str):
    if scope not in SCOPES:
        raise ValueError(scope)

    async def check(who: auth.Identity = Depends(identity)) -> auth.Identity:
        if not who.has(scope):
            raise ApiError(403, "forbidden", f"this token lacks the {scope!r} scope")
        return who

    return check


def scoped(scope: str) -> dict[str, Any]:
    """Route keyword arguments: the scope, as a dependency and in the OpenAPI schema."""
    return {"openapi_extra": {"x-scope": scope}}


Reader = Annotated[auth.Identity, Depends(require("read"))]
Generator = Annotated[auth.Identity, Depends(require("generate"))]
Stylist = Annotated[auth.Identity, Depends(require("stylize"))]
Rater = Annotated[auth.Identity, Depends(require("rate"))]
Admin = Annotated[auth.Identity, Depends(require("admin"))]
Anyone = Annotated[auth.Identity, Depends(identity)]  # any valid token or session, whatever its scopes
#: The x-scope of routes any authenticated caller may use (their own session).
ANY_SCOPE = "authenticated"
StudioDep = Annotated[Studio, Depends(studio)]


def model_for(s: Studio, who: auth.Identity, name: str, operation: str | None = None) -> str:
    """The model ``name`` if it exists and this token may use it (404 otherwise, the same either way)."""
    if name not in s.catalog or not who.may_use(name):
        raise ApiError(404, "not_found", f"no model named {name!r}", "model")
    if operation is not None and operation not in s.catalog.operations(name):
        raise ApiError(422, "unsupported", f"{name} is a {s.catalog.get(name).family} model and cannot {operation}",
                       "model")
    return name


async def _read_upload(s: Studio, upload: UploadFile, what: str) -> bytes:
    data = await upload.read(s.settings.max_upload_bytes + 1)
    try:
        return check_upload(data, s.settings.max_upload_bytes, what)
    except UploadTooLarge as exc:
        raise ApiError(413, "too_large", str(exc), what) from None
    except DataError as exc:
        raise ApiError(422, "bad_image", str(exc), what) from None


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


# -- request bodies ----------------------------------------------------------------------------------


class LoginBody(BaseModel):
    token: str = Field(max_length=200)


class GenerateBody(BaseModel):
    n: int = Field(16, ge=1, description="images; at most the server's max_n (more: a generate job)")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    label: int | None = Field(None, ge=0)
    truncation: float | None = Field(None, gt=0, le=100)
    format: Literal["png", "zip", "npz"] = "png"


class InterpolateBody(BaseModel):
    seeds: tuple[int, int] | None = None
    classes: tuple[int, int] | None = None
    steps: int = Field(10, ge=2)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    label: int | None = Field(None, ge=0)
    truncation: float | None = Field(None, gt=0, le=100)
    method: Literal["slerp", "lerp"] = "slerp"
    format: Literal["png", "gif"] = "png"


class TraverseBody(BaseModel):
    dims: list[int] | None = Field(None, max_length=10)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    label: int | None = Field(None, ge=0)
    span: float = Field(3.0, gt=0, le=10)
    steps: int = Field(9, ge=2, le=25)


class JobBody(BaseModel):
    kind: Literal["generate", "evaluate"]
    model: str = Field(max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)


class TokenBody(BaseModel):
    principal: str = Field(max_length=64)
    scopes: list[str] = Field(min_length=1, max_length=len(SCOPES))
    models: list[str] | None = Field(None, max_length=1000)
    expires_days: float | None = Field(None, gt=0, le=3650)
    label: str = Field("", max_length=200)


class PairBody(BaseModel):
    models: tuple[str, str] | None = None


class RealBody(BaseModel):
    model: str | None = Field(None, max_length=200)


class VoteBody(BaseModel):
    answer: Literal["left", "right", "both_good", "both_bad", "real", "generated"]


# -- responses, as the schema declares them ------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every refusal: a stable code, a message naming the problem, the request field at fault (or null)."""

    error: ErrorDetail


def _refusal(description: str, header: str | None = None, meaning: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"model": ErrorBody, "description": description}
    if header:
        out["headers"] = {header: {"description": meaning, "schema": {"type": "string"}}}
    return out


#: The refusals of the routes, declared once for the whole API (a route adds its own successes): most routes
#: can give each of them. The schema is the contract the tests fuzz: an undeclared answer fails there.
REFUSALS: dict[int | str, dict[str, Any]] = {
    400: _refusal("a request body that cannot be parsed (a broken multipart form)"),
    401: _refusal("no valid token or session", "WWW-Authenticate", "Bearer"),
    403: _refusal("the token lacks the route's scope, or a session's request lacks its CSRF header"),
    404: _refusal("no such object (or not yours: the same answer)"),
    413: _refusal("more than a limit of the studio allows"),
    422: _refusal("an invalid field, named in the error"),
    429: _refusal("too many requests, jobs or failed logins", "Retry-After", "seconds to wait"),
}
CONFLICT = {409: _refusal("the request conflicts with what was done before (already rated, too few models)")}


def binary(*media_types: str) -> dict[str, Any]:
    """Route keyword arguments of a route answering bytes of ``media_types`` (an image, a zip), not JSON."""
    return {"response_class": Response,
            "responses": {200: {"description": "the file", "content": {m: {} for m in media_types}}}}


# -- the application ------------------------------------------------------------------------------------


def create_app(settings: ServeConfig, *, catalog: Catalog | None = None, db: Database | None = None,
               start_workers: bool = True) -> FastAPI:
    """The studio as an ASGI app. ``catalog``/``db`` default to those ``settings`` name."""
    db = db or Database(settings.db_url)
    if catalog is None:
        catalog = Catalog.from_folders(list(settings.models), settings.device, checkpoints=settings.checkpoints,
                                       key=settings.model_key(), trusted=settings.trusted_keys())
    jobs = JobQueue(db, catalog, settings)
    state = Studio(settings, db, catalog, jobs, {}, RateLimits(settings))
    catalog.on_load = lambda entry, sha: audit.record(
        db, "model.load", actor="studio", target=entry.name,
        detail={"sha256": sha, "signed_by": entry.signed_by, "encrypted": entry.sealed})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_workers and settings.workers:
            jobs.recover()
            jobs.start_workers(settings.workers)
        try:
            yield
        finally:
            for b in state.batchers.values():
                await b.close()
            await asyncio.to_thread(jobs.stop_workers)

    from atelier import __version__

    app = FastAPI(title="Atelier studio", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan, responses=REFUSALS, redirect_slashes=False,  # a JSON 404, not a 307
                  description="Generate, explore, stylise and rate images from trained Atelier models. Every "
                              "route but /healthz, the page and the login needs a token (Authorization: Bearer).")
    app.state.studio = state

    @app.exception_handler(ApiError)
    async def api_error(_request, exc: ApiError):
        return _error(exc.status_code, exc.code, str(exc.detail), exc.field, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated", 403: "forbidden"}.get(
            exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), None, getattr(exc, "headers", None))

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(_request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path", "form")]
        message = str(first.get("msg", "invalid request"))
        return _error(422, "invalid", f"{'.'.join(loc) + ': ' if loc else ''}{message}", ".".join(loc) or None)

    @app.exception_handler(QueueFull)
    async def queue_full(_request, exc: QueueFull):
        return _error(429, "queue_full", str(exc), None, {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Overloaded)
    async def overloaded(_request, exc: Overloaded):
        return _error(429, "overloaded", str(exc), None, {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(UploadTooLarge)
    async def too_large(_request, exc: UploadTooLarge):
        return _error(413, "too_large", str(exc), None)

    @app.exception_handler(DataError)
    async def bad_data(_request, exc: DataError):
        return _error(422, "bad_input", str(exc), None)

    @app.exception_handler(ValueError)
    async def bad_value(_request, exc: ValueError):
        return _error(422, "invalid", str(exc), getattr(exc, "field", None))

    @app.exception_handler(Exception)
    async def bug(_request, exc: Exception):
        ref = secrets.token_hex(4)
        log.exception("internal error %s", ref)
        return _error(500, "internal", f"internal error (reference {ref} in the server's log)")

    _public_routes(app)
    _model_routes(app)
    _job_routes(app)
    _rating_routes(app)
    _admin_routes(app)
    return app


def _static(name: str) -> Any:
    return resources.files("atelier.serve").joinpath("static", name)


def _public_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["public"])
    def healthz(s: StudioDep) -> dict:
        with s.db.session() as session:
            session.execute(sa.text("SELECT 1"))
        return {"status": "ok", "models": len(s.catalog)}

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(_static("index.html").read_bytes(), media_type="text/html",
                        headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                                            "style-src 'self'; script-src 'self'; "
                                                            "frame-ancestors 'none'",
                                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    media = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png",
             ".html": "text/html"}

    @app.get("/static/{path:path}", include_in_schema=False)
    def static(path: str) -> Response:
        name = path.rsplit("/", 1)[-1]
        if "/" in path or name.startswith(".") or not any(name.endswith(ext) for ext in media):
            raise ApiError(404, "not_found", "no such file")
        item = _static(name)
        if not item.is_file():
            raise ApiError(404, "not_found", "no such file")
        return Response(item.read_bytes(), media_type=media[name[name.rindex("."):]],
                        headers={"X-Content-Type-Options": "nosniff"})

    @app.post("/v1/session", tags=["session"])
    def login(body: LoginBody, request: Request, s: StudioDep) -> JSONResponse:
        """Exchange a token for a session cookie (HttpOnly, SameSite=Strict) and the session's CSRF token."""
        address = request.client.host if request.client else None
        if s.limits is not None:
            s.limits.check_address(address)
        who = auth.authenticate(s.db, body.token.strip())
        if who is None:
            if s.limits is not None:
                s.limits.failed_login(address)
            audit.record(s.db, "login.failed", address=address)
            raise ApiError(401, "unauthenticated", "the token is missing, malformed, unknown, expired or revoked",
                           "token")
        audit.record(s.db, "login", actor=who.name, address=address)
        session_id, csrf = auth.open_session(s.db, who, s.settings.session_hours)
        response = JSONResponse({"principal": who.name, "scopes": sorted(who.scopes), "csrf": csrf})
        response.set_cookie(SESSION_COOKIE, session_id, max_age=int(s.settings.session_hours * 3600), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path="/")
        return response

    @app.get("/v1/session", tags=["session"], openapi_extra={"x-scope": ANY_SCOPE})
    def whoami(request: Request, who: Anyone) -> dict:
        session = request.cookies.get(SESSION_COOKIE)
        return {"principal": who.name, "scopes": sorted(who.scopes),
                "models": None if who.models is None else sorted(who.models),
                "csrf": auth.csrf_for(session) if who.via_session and session else None}

    @app.delete("/v1/session", tags=["session"], openapi_extra={"x-scope": ANY_SCOPE})
    def logout(request: Request, who: Anyone, s: StudioDep) -> JSONResponse:
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            auth.close_session(s.db, session)
        response = JSONResponse({"logged_out": True})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/openapi.json", include_in_schema=False, **scoped("read"))
    def openapi(request: Request, who: Reader) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @app.get("/docs", include_in_schema=False, **scoped("read"))
    def docs(who: Reader) -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="Atelier studio API",
                                   swagger_js_url="/docs/swagger-ui-bundle.js", swagger_css_url="/docs/swagger-ui.css",
                                   swagger_favicon_url="/docs/favicon-32x32.png")

    @app.get("/docs/{name}", include_in_schema=False, **scoped("read"))
    def docs_asset(name: str, who: Reader) -> Response:
        from pathlib import Path

        import swagger_ui_bundle

        allowed = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
                   "favicon-32x32.png": "image/png"}
        if name not in allowed:
            raise ApiError(404, "not_found", "no such file")
        return FileResponse(Path(swagger_ui_bundle.swagger_ui_path) / name, media_type=allowed[name])


def _model_routes(app: FastAPI) -> None:
    @app.get("/v1/models", tags=["models"], **scoped("read"))
    def list_models(who: Reader, s: StudioDep) -> list[dict]:
        return [s.catalog.get(n).describe() | {"operations": s.catalog.operations(n),
                                              "class_names": _class_names(s, n)}
                for n in sorted(s.catalog.entries) if who.may_use(n)]

    @app.get("/v1/models/{name}", tags=["models"], **scoped("read"))
    def model_details(name: str, who: Reader, s: StudioDep) -> dict:
        model_for(s, who, name)
        entry = s.catalog.get(name)
        return entry.describe() | {"operations": s.catalog.operations(name), "class_names": _class_names(s, name),
                                   "config": entry.config.get("model", {}), "train": entry.config.get("train"),
                                   "data": entry.config.get("data")}

    @app.get("/v1/models/{name}/grid.png", tags=["models"], **scoped("read"), **binary("image/png"))
    async def model_grid(name: str, who: Reader, s: StudioDep) -> Response:
        model_for(s, who, name, "sample")
        images = await s.batcher(name).submit(GenerateRequest(16, 0))
        made = await asyncio.to_thread(generation_provenance, s.catalog, name, seed=0, n=16)
        return _png((await asyncio.to_thread(encode_samples, images, None, "png", provenance=made)).data)

    @app.post("/v1/models/{name}/generate", tags=["generate"], **scoped("generate"),
              **binary("image/png", "application/zip", "application/octet-stream"))
    async def generate(name: str, body: GenerateBody, who: Generator, s: StudioDep) -> Response:
        """Quick generation (n up to max_n): concurrent requests to one model share a forward pass."""
        model_for(s, who, name, "sample")
        if body.n > s.settings.max_n:
            raise ApiError(413, "too_many", f"n={body.n} is more than a quick request's {s.settings.max_n}; "
                                            "submit a generate job (POST /v1/jobs) for more", "n")
        _check_label(s, name, body.label)
        charge_images(s, who, body.n)
        images = await s.batcher(name).submit(GenerateRequest(body.n, body.seed, body.label, body.truncation))
        pipe = s.catalog.pipeline(name)
        labels = None
        if pipe.class_names is not None:
            import torch

            labels = torch.full((body.n,), body.label) if body.label is not None else \
                torch.arange(body.n) % len(pipe.class_names)
        made = await asyncio.to_thread(generation_provenance, s.catalog, name, seed=body.seed, n=body.n,
                                       label=body.label, truncation=body.truncation)  # hashes the weights once
        f = await asyncio.to_thread(encode_samples, images, labels, body.format, pipe.class_names, compress=False,
                                    provenance=made)
        return Response(f.data, media_type=f.media_type,
                        headers={"Content-Disposition": f'attachment; filename="{f.name}"'} if body.format != "png"
                        else {"Cache-Control": "no-store"})

    @app.post("/v1/models/{name}/interpolate", tags=["generate"], **scoped("generate"),
              **binary("image/png", "image/gif"))
    async def interpolate(name: str, body: InterpolateBody, who: Generator, s: StudioDep) -> Response:
        model_for(s, who, name, "interpolate")
        if body.steps > s.settings.max_steps:
            raise ApiError(413, "too_many", f"steps={body.steps} is more than {s.settings.max_steps}", "steps")
        if (body.seeds is None) == (body.classes is None):
            raise ApiError(422, "invalid", "give either seeds [a, b] or classes [a, b]", "seeds")
        for c in (body.classes or ()):
            _check_label(s, name, c, "classes")
        _check_label(s, name, body.label)
        charge_images(s, who, body.steps)
        pipe = s.catalog.pipeline(name)
        frames = await asyncio.to_thread(pipe.interpolate, seeds=body.seeds, classes=body.classes, steps=body.steps,
                                         seed=body.seed, label=body.label, method=body.method,
                                         truncation=body.truncation)
        png, gif = strip_and_gif(frames)
        f = png if body.format == "png" else gif
        return Response(f.data, media_type=f.media_type, headers={"Cache-Control": "no-store"})

    @app.post("/v1/models/{name}/traverse", tags=["generate"], **scoped("generate"), **binary("image/png"))
    async def traverse(name: str, body: TraverseBody, who: Generator, s: StudioDep) -> Response:
        model_for(s, who, name, "interpolate")
        _check_label(s, name, body.label)
        charge_images(s, who, body.steps * (len(body.dims) if body.dims else 10))
        pipe = s.catalog.pipeline(name)
        f = await asyncio.to_thread(traversal, pipe, dims=body.dims, seed=body.seed, label=body.label, span=body.span,
                                    steps=body.steps)
        return _png(f.data)

    @app.post("/v1/models/{name}/reconstruct", tags=["generate"], **scoped("generate"))
    async def reconstruct(name: str, who: Generator, s: StudioDep, image: UploadFile = FormFile(...)) -> dict:
        """A VAE's reconstruction of an uploaded image (PNG, base64) and its latent (posterior mean)."""
        model_for(s, who, name, "reconstruct")
        data = await _read_upload(s, image, "image")
        pipe = s.catalog.pipeline(name)
        if pipe.class_names is not None:
            raise ApiError(422, "unsupported", f"{name} is class-conditional: reconstruction needs the image's "
                                               "label, which the studio does not take yet", "model")
        x = model_image(data, pipe, max_pixels=s.settings.max_upload_pixels, what="image")
        f, latent = await asyncio.to_thread(reconstruction, pipe, x)
        return {"image_png": base64.b64encode(f.data).decode(), "latent": latent}

    @app.post("/v1/models/{name}/interpolate-images", tags=["generate"], **scoped("generate"),
              **binary("image/png", "image/gif"))
    async def interpolate_uploads(name: str, who: Generator, s: StudioDep, a: UploadFile = FormFile(...),
                                  b: UploadFile = FormFile(...), steps: int = Form(10, ge=2),
                                  format: Literal["png", "gif"] = Form("png")) -> Response:
        model_for(s, who, name, "reconstruct")
        if steps > s.settings.max_steps:
            raise ApiError(413, "too_many", f"steps={steps} is more than {s.settings.max_steps}", "steps")
        pipe = s.catalog.pipeline(name)
        if pipe.class_names is not None:
            raise ApiError(422, "unsupported", f"{name} is class-conditional; interpolating uploads needs an "
                                               "unconditional VAE", "model")
        xa = model_image(await _read_upload(s, a, "a"), pipe, max_pixels=s.settings.max_upload_pixels, what="a")
        xb = model_image(await _read_upload(s, b, "b"), pipe, max_pixels=s.settings.max_upload_pixels, what="b")
        png, gif = await asyncio.to_thread(image_interpolation, pipe, xa, xb, steps)
        f = png if format == "png" else gif
        return Response(f.data, media_type=f.media_type)

    def solver_options(s: Studio, steps: int | None, sampler: str | None, guidance: float | None) -> dict:
        if steps is not None and steps > s.settings.max_solver_steps:
            raise ApiError(413, "too_many", f"steps={steps} is more than {s.settings.max_solver_steps}", "steps")
        return {k: v for k, v in (("steps", steps), ("sampler", sampler), ("guidance", guidance)) if v is not None}

    @app.post("/v1/models/{name}/edit", tags=["generate"], **scoped("generate"), **binary("image/png"))
    async def edit(name: str, who: Generator, s: StudioDep, image: UploadFile = FormFile(...),
                   strength: float = Form(0.6, ge=0.0, le=1.0), label: int | None = Form(None, ge=0),
                   seed: int = Form(0, ge=0, le=2**63 - 1), steps: int | None = Form(None, ge=1),
                   sampler: Literal["euler", "heun", "dpm++2m", "ab2"] | None = Form(None),
                   guidance: float | None = Form(None, ge=0.0, le=100.0)) -> Response:
        """A flow model's edit of an upload (a photo or a rough sketch): noised to time ``strength`` (0 keeps
        it, 1 ignores it) and solved back; the input and the edit side by side."""
        model_for(s, who, name, "edit")
        _check_label(s, name, label)
        options = solver_options(s, steps, sampler, guidance)
        pipe = s.catalog.pipeline(name)
        x = model_image(await _read_upload(s, image, "image"), pipe, max_pixels=s.settings.max_upload_pixels,
                        what="image")
        charge_images(s, who, 1)
        f = await asyncio.to_thread(edited, pipe, x, strength=strength, label=label, seed=seed, options=options)
        return _png(f.data)

    @app.post("/v1/models/{name}/inpaint", tags=["generate"], **scoped("generate"), **binary("image/png"))
    async def inpaint(name: str, who: Generator, s: StudioDep, image: UploadFile = FormFile(...),
                      box: str = Form("0.25,0.25,0.75,0.75", max_length=100,
                                      description="x0,y0,x1,y1: the hole as fractions of the side (unless mask)"),
                      mask: UploadFile | None = FormFile(None, description="an image whose white pixels mark the hole"),
                      n: int = Form(4, ge=1), label: int | None = Form(None, ge=0),
                      seed: int = Form(0, ge=0, le=2**63 - 64), steps: int | None = Form(None, ge=1),
                      sampler: Literal["euler", "heun", "dpm++2m", "ab2"] | None = Form(None),
                      guidance: float | None = Form(None, ge=0.0, le=100.0)) -> Response:
        """A flow model's fills of a hole in an upload, the rest kept exactly: the input with the hole greyed,
        then ``n`` fills from seeds ``seed``, ``seed + 1``, ..."""
        model_for(s, who, name, "inpaint")
        if n > s.settings.max_n:
            raise ApiError(413, "too_many", f"n={n} is more than a quick request's {s.settings.max_n}", "n")
        _check_label(s, name, label)
        options = solver_options(s, steps, sampler, guidance)
        pipe = s.catalog.pipeline(name)
        x = model_image(await _read_upload(s, image, "image"), pipe, max_pixels=s.settings.max_upload_pixels,
                        what="image")
        r = x.shape[-1]
        try:
            if mask is not None:
                m = upload_mask(model_image(await _read_upload(s, mask, "mask"), pipe,
                                            max_pixels=s.settings.max_upload_pixels, what="mask"))
            else:
                m = box_mask(parse_box(box, "box"), r, "box")
        except ValueError as exc:
            raise ApiError(422, "invalid", str(exc), "mask" if mask is not None else "box") from None
        charge_images(s, who, n)
        f = await asyncio.to_thread(inpainted, pipe, x, m, n=n, label=label, seed=seed, options=options)
        return _png(f.data)

    @app.post("/v1/models/{name}/stylize", tags=["style"], **scoped("stylize"), **binary("image/png"))
    async def stylize(name: str, who: Stylist, s: StudioDep, image: UploadFile = FormFile(...),
                      strength: float = Form(1.0, ge=0.0, le=1.0)) -> Response:
        """A fast-style model applied to an upload (its longer side capped at max_image_side)."""
        model_for(s, who, name, "stylize")
        data = await _read_upload(s, image, "image")
        x = photo(data, max_pixels=s.settings.max_upload_pixels, max_side=s.settings.max_image_side, what="image")
        f = await asyncio.to_thread(stylized, s.catalog.pipeline(name), x, strength)
        return _png(f.data)

    @app.post("/v1/models/{name}/translate", tags=["style"], **scoped("stylize"), **binary("image/png"))
    async def translate(name: str, who: Stylist, s: StudioDep, image: UploadFile = FormFile(...),
                        direction: Literal["a2b", "b2a"] = Form("a2b")) -> Response:
        """A CycleGAN applied to one upload: the input and its translation side by side."""
        model_for(s, who, name, "translate")
        pipe = s.catalog.pipeline(name)
        x = model_image(await _read_upload(s, image, "image"), pipe, max_pixels=s.settings.max_upload_pixels,
                        what="image", direction=direction)
        f = await asyncio.to_thread(translated, pipe, x[None], direction)
        return _png(f.data)


def _class_names(s: Studio, name: str) -> list[str] | None:
    entry = s.catalog.get(name)
    k = entry.num_classes
    if not k:
        return None
    names = (entry.config.get("dataset") or {}).get("classes")
    return [str(c) for c in names] if isinstance(names, list) and len(names) == k else [str(i) for i in range(k)]


def _check_label(s: Studio, name: str, label: int | None, field: str = "label") -> None:
    if label is None:
        return
    k = s.catalog.get(name).num_classes
    if not k:
        raise ApiError(422, "invalid", f"{name} is unconditional: it takes no {field}", field)
    if not 0 <= label < k:
        raise ApiError(422, "invalid", f"{field} must lie in 0..{k - 1}, got {label}", field)


# -- jobs -------------------------------------------------------------------------------------------


def _job_json(job: Job, files: list[JobFile] | None = None) -> dict:
    out = {"id": job.id, "kind": job.kind, "model": job.model, "status": job.status,
           "progress": round(job.progress, 4), "message": job.message, "error": job.error,
           "created_at": job.created_at.isoformat(), "finished_at": job.finished_at and job.finished_at.isoformat(),
           "has_preview": job.preview is not None, "params": job.params}
    if files is not None:
        out["files"] = [{"name": f.name, "media_type": f.media_type, "bytes": len(f.data),
                         "url": f"/v1/jobs/{job.id}/files/{f.name}"} for f in files
                        if not f.name.startswith(INPUT_PREFIX)]
    return out


def _owned(s: Studio, who: auth.Identity, cls, object_id: str, what: str, field: str):
    """The caller's own object: another's answers 404 exactly as a missing one does."""
    with s.db.session() as session:
        row = session.get(cls, object_id) if len(object_id) <= 64 else None
    if row is None or row.owner_id != who.principal_id:
        raise ApiError(404, "not_found", f"no such {what}", field)
    return row


def _own_job(s: Studio, who: auth.Identity, job_id: str) -> Job:
    return _owned(s, who, Job, job_id, "job", "job")


def _job_routes(app: FastAPI) -> None:
    @app.post("/v1/jobs", tags=["jobs"], status_code=202, **scoped("generate"))
    def submit(body: JobBody, who: Generator, s: StudioDep) -> dict:
        """Enqueue a long generation (params as for generate; n up to max_job_n; format png, zip or npz) or an
        evaluation of a model (params: n, and data = digits | mnist | cifar10 for a model saved without its run's data)."""
        model_for(s, who, body.model, "sample")
        p = dict(body.params)
        if body.kind == "generate":
            q = GenerateBody(**{k: v for k, v in p.items() if k in GenerateBody.model_fields} | {"n": p.get("n", 64)})
            if q.n > s.settings.max_job_n:
                raise ApiError(413, "too_many", f"n={q.n} is more than a job's {s.settings.max_job_n}", "params.n")
            if q.format == "png" and q.n > 1024:
                raise ApiError(422, "invalid", "a PNG grid holds at most 1024 images; use zip or npz", "params.format")
            _check_label(s, body.model, q.label, "params.label")
            params = q.model_dump()
        else:
            n = p.get("n", 2000)
            if isinstance(n, bool) or not isinstance(n, int) or not 10 <= n <= s.settings.max_job_n:
                raise ApiError(422, "invalid", f"params.n must be an integer in 10..{s.settings.max_job_n}", "params.n")
            data = p.get("data")
            if data not in (None, "digits", "mnist", "cifar10"):  # never a path on the server
                raise ApiError(422, "invalid", "params.data is digits, mnist or cifar10 (default: the run's own data)",
                               "params.data")
            params = {"n": n, "seed": 0, "metrics": ["fid", "kid"], "data": data}
        job_id = s.jobs.submit(who.principal_id, body.kind, params, model=body.model)
        return {"id": job_id, "status": "queued", "url": f"/v1/jobs/{job_id}"}

    @app.post("/v1/jobs/gatys", tags=["jobs"], status_code=202, **scoped("stylize"))
    async def submit_gatys(who: Stylist, s: StudioDep, content: UploadFile = FormFile(...),
                           style: UploadFile = FormFile(...), steps: int = Form(100, ge=1),
                           size: int = Form(256, ge=32, le=2048), seed: int = Form(0, ge=0)) -> dict:
        """Gatys style transfer of ``content`` in the manner of ``style``, as a job with previews."""
        if steps > s.settings.max_gatys_steps:
            raise ApiError(413, "too_many", f"steps={steps} is more than {s.settings.max_gatys_steps}", "steps")
        if size > s.settings.max_image_side:
            raise ApiError(413, "too_large", f"size={size} is more than {s.settings.max_image_side}", "size")
        c = await _read_upload(s, content, "content")
        st = await _read_upload(s, style, "style")
        # a bad image is refused now, not in the worker; the job keeps the pixels alone (no EXIF, GPS, XMP,
        # text chunks), at most max_image_side on the longer side as the worker reads them
        c, st = [await asyncio.to_thread(clean_photo, data, max_pixels=s.settings.max_upload_pixels,
                                         max_side=s.settings.max_image_side, what=what)
                 for data, what in ((c, "content"), (st, "style"))]
        job_id = await asyncio.to_thread(s.jobs.submit, who.principal_id, "gatys",
                                         {"steps": steps, "size": size, "seed": seed},
                                         inputs={"content": ("image/png", c), "style": ("image/png", st)})
        return {"id": job_id, "status": "queued", "url": f"/v1/jobs/{job_id}"}

    @app.post("/v1/jobs/translate", tags=["jobs"], status_code=202, **scoped("stylize"))
    async def submit_translate(who: Stylist, s: StudioDep, model: str = Form(..., max_length=200),
                               images: UploadFile = FormFile(...),
                               direction: Literal["a2b", "b2a"] = Form("a2b")) -> dict:
        """Translate many images (a zip) or one with a CycleGAN, as a job."""
        model_for(s, who, model, "translate")
        data = await _read_upload(s, images, "images")
        pipe = await asyncio.to_thread(s.catalog.pipeline, model)
        # every image checked now and kept as the model's input alone (pixels; names never paths)
        data = await asyncio.to_thread(translate_inputs, data, pipe, max_bytes=s.settings.max_upload_bytes,
                                       max_pixels=s.settings.max_upload_pixels, direction=direction)
        job_id = await asyncio.to_thread(s.jobs.submit, who.principal_id, "translate", {"direction": direction},
                                         model=model, inputs={"images": ("application/zip", data)})
        return {"id": job_id, "status": "queued", "url": f"/v1/jobs/{job_id}"}

    @app.get("/v1/jobs", tags=["jobs"], **scoped("read"))
    def my_jobs(who: Reader, s: StudioDep) -> list[dict]:
        with s.db.session() as session:
            jobs = session.scalars(sa.select(Job).where(Job.owner_id == who.principal_id)
                                   .order_by(Job.created_at.desc()).limit(200)).all()
        return [_job_json(j) for j in jobs]

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], **scoped("read"))
    def job_status(job_id: str, who: Reader, s: StudioDep) -> dict:
        job = _own_job(s, who, job_id)
        with s.db.session() as session:
            files = session.scalars(sa.select(JobFile).where(JobFile.job_id == job.id)).all()
        return _job_json(job, list(files))

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], **scoped("read"))
    def cancel(job_id: str, who: Reader, s: StudioDep) -> dict:
        _own_job(s, who, job_id)
        status = s.jobs.cancel(job_id)
        audit.record(s.db, "job.cancel", actor=who.name, target=job_id)
        return {"id": job_id, "status": status}

    @app.get("/v1/jobs/{job_id}/preview.png", tags=["jobs"], **scoped("read"), **binary("image/png"))
    def preview(job_id: str, who: Reader, s: StudioDep) -> Response:
        job = _own_job(s, who, job_id)
        if job.preview is None:
            raise ApiError(404, "not_found", "this job has no preview (yet)")
        return _png(job.preview)

    @app.get("/v1/jobs/{job_id}/files/{name}", tags=["jobs"], **scoped("read"),
             **binary("image/png", "application/zip", "application/octet-stream", "application/json"))
    def job_file(job_id: str, name: str, who: Reader, s: StudioDep) -> Response:
        job = _own_job(s, who, job_id)
        with s.db.session() as session:
            f = session.scalar(sa.select(JobFile).where(JobFile.job_id == job.id, JobFile.name == name))
        if f is None or name.startswith(INPUT_PREFIX):
            raise ApiError(404, "not_found", f"job {job_id} has no file {name!r}", "name")
        return Response(f.data, media_type=f.media_type,
                        headers={"Content-Disposition": f'attachment; filename="{f.name}"'})

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"], **scoped("read"),
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(job_id: str, request: Request, who: Reader, s: StudioDep) -> StreamingResponse:
        """Server-sent events: ``progress`` whenever the job changes, then one ``end``."""
        _own_job(s, who, job_id)

        def snapshot() -> dict:
            with s.db.session() as session:
                job = session.get(Job, job_id)
                return {"status": job.status, "progress": round(job.progress, 4), "message": job.message,
                        "error": job.error,  # preview: a checksum, so the page sees each new one
                        "preview": zlib.crc32(job.preview) if job.preview is not None else None}

        async def stream():
            last = None
            idle = 0.0
            while True:
                state = await asyncio.to_thread(snapshot)
                if state != last:
                    yield f"event: progress\ndata: {json.dumps(state)}\n\n"
                    last, idle = state, 0.0
                if state["status"] in FINISHED:
                    yield f"event: end\ndata: {json.dumps(state)}\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.2)
                idle += 0.2
                if idle >= 15:
                    yield ": keep-alive\n\n"
                    idle = 0.0

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# -- ratings ------------------------------------------------------------------------------------------


def _task_json(task: RatingTask) -> dict:
    base = f"/v1/ratings/tasks/{task.id}"
    if task.kind == "pair":
        return {"id": task.id, "kind": "pair", "question": task.question, "left": f"{base}/left.png",
                "right": f"{base}/right.png", "answers": list(rating_store.PAIR_ANSWERS)}
    return {"id": task.id, "kind": "real", "question": task.question, "image": f"{base}/image.png",
            "answers": list(rating_store.REAL_ANSWERS)}


def _own_task(s: Studio, who: auth.Identity, task_id: str) -> RatingTask:
    return _owned(s, who, RatingTask, task_id, "rating question", "task")


def _rating_routes(app: FastAPI) -> None:
    def ask(s: Studio, who: auth.Identity, named: list[str], make) -> dict:
        """A new rating question from ``make()``, after checking the models named in the request."""
        for m in named:
            model_for(s, who, m, "sample")
        try:
            return _task_json(make())
        except rating_store.NotEnoughModels as exc:
            raise ApiError(409, "not_enough_models", str(exc)) from None

    @app.post("/v1/ratings/pairs", tags=["ratings"], **scoped("rate"), responses=CONFLICT)
    def new_pair(body: PairBody, who: Rater, s: StudioDep) -> dict:
        """A new pair of samples from two models (random ones unless named) to compare."""
        return ask(s, who, list(body.models or ()), lambda: rating_store.new_pair(
            s.db, s.catalog, who.principal_id, models=body.models, allowed=who.may_use))

    @app.post("/v1/ratings/real", tags=["ratings"], **scoped("rate"), responses=CONFLICT)
    def new_real(body: RealBody, who: Rater, s: StudioDep) -> dict:
        """One image, real (a test image of the model's dataset) or generated: which is it?"""
        return ask(s, who, [body.model] if body.model else [], lambda: rating_store.new_real_task(
            s.db, s.catalog, who.principal_id, model=body.model, allowed=who.may_use))

    @app.get("/v1/ratings/tasks/{task_id}/{side}.png", tags=["ratings"], **scoped("rate"), **binary("image/png"))
    async def task_image(task_id: str, side: Literal["left", "right", "image"], who: Rater, s: StudioDep) -> Response:
        task = _own_task(s, who, task_id)
        item = task.right_item if side == "right" else task.left_item
        if item is None or (side == "image") != (task.kind == "real"):
            raise ApiError(404, "not_found", f"this question has no {side} image", "side")
        from atelier.data.images import png_bytes

        image = await asyncio.to_thread(rating_store.item_image, s.catalog, item)
        return _png(png_bytes(image, scale=max(1, 128 // image.shape[-1])))

    @app.post("/v1/ratings/tasks/{task_id}/vote", tags=["ratings"], **scoped("rate"), responses=CONFLICT)
    def cast_vote(task_id: str, body: VoteBody, who: Rater, s: StudioDep) -> dict:
        task = _own_task(s, who, task_id)
        try:
            rating_store.vote(s.db, task, who.principal_id, who.name, body.answer)
        except KeyError as exc:
            raise ApiError(409, "already_rated", exc.args[0]) from None
        return {"recorded": True}

    @app.get("/v1/ratings/leaderboard", tags=["ratings"], **scoped("read"))
    def leaderboard(who: Reader, s: StudioDep) -> dict:
        rows = [r for r in rating_store.board(s.db) if who.may_use(r["model"])]
        return {"question": rating_store.QUESTION, "method": "Bradley-Terry, ties as half wins, bootstrap 95%",
                "rows": rows}

    @app.get("/v1/ratings/real-fraction", tags=["ratings"], **scoped("read"))
    def real_fraction(who: Reader, s: StudioDep) -> dict:
        return rating_store.realness(s.db)

    @app.get("/v1/ratings/export", tags=["ratings"], **scoped("admin"),
             responses={200: {"content": {"application/x-ndjson": {}}}})
    def export(who: Admin, s: StudioDep) -> StreamingResponse:
        audit.record(s.db, "ratings.export", actor=who.name)
        return StreamingResponse(rating_store.export_jsonl(s.db), media_type="application/x-ndjson",
                                 headers={"Content-Disposition": 'attachment; filename="ratings.jsonl"'})


def _admin_routes(app: FastAPI) -> None:
    @app.get("/v1/tokens", tags=["admin"], **scoped("admin"))
    def tokens(who: Admin, s: StudioDep) -> list[dict]:
        return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in t.items()}
                for t in auth.list_tokens(s.db)]

    @app.post("/v1/tokens", tags=["admin"], status_code=201, **scoped("admin"))
    def create_token(body: TokenBody, who: Admin, s: StudioDep) -> dict:
        from datetime import timedelta

        new = auth.create_token(s.db, body.principal, body.scopes, models=body.models, label=body.label,
                                expires_in=timedelta(days=body.expires_days) if body.expires_days else None)
        audit.record(s.db, "token.create", actor=who.name, target=new.key_id,
                     detail={"principal": new.principal, "scopes": list(new.scopes), "models": new.models},
                     free_text={"label": body.label})
        return {"token": new.token, "key_id": new.key_id, "principal": new.principal, "scopes": list(new.scopes),
                "models": new.models, "expires_at": new.expires_at and new.expires_at.isoformat(),
                "note": "shown once: only its hash is kept"}

    @app.delete("/v1/tokens/{key_id}", tags=["admin"], **scoped("admin"))
    def revoke(key_id: str, who: Admin, s: StudioDep) -> dict:
        if not auth.revoke_token(s.db, key_id):
            raise ApiError(404, "not_found", f"no active token with key id {key_id!r}", "key_id")
        audit.record(s.db, "token.revoke", actor=who.name, target=key_id)
        return {"revoked": key_id}

    @app.get("/v1/audit", tags=["admin"], **scoped("admin"))
    def audit_trail(who: Admin, s: StudioDep, limit: int = 100) -> dict:
        """The newest events and whether the whole chain verifies."""
        verdict = audit.verify(s.db)
        return {"verified": verdict.ok, "rows": verdict.rows, "problem": verdict.problem,
                "events": audit.recent(s.db, max(1, min(limit, 1000)))}

    @app.get("/v1/stats", tags=["admin"], **scoped("admin"))
    def stats(who: Admin, s: StudioDep) -> dict:
        with s.db.session() as session:
            counts = dict(session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status)).all())
        return {"batching": {n: b.stats.as_dict() for n, b in s.batchers.items()}, "jobs": counts,
                "active_jobs": sum(counts.get(k, 0) for k in ACTIVE)}


__all__ = ["create_app", "PUBLIC", "Studio", "ApiError", "job_kinds"]
