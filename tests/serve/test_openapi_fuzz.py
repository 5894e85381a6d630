"""The OpenAPI schema is the contract: schemathesis generates requests for every operation from it
(valid and invalid bodies, paths and forms), sends each with one of several real credentials (a token
holding exactly the operation's scope, another scope's token, an admin token, a web session with its
CSRF header), and every answer must be no server error and must conform to the schema: a documented
status code, a documented content type, a body matching the declared response model (every refusal the
``{"error": {code, message, field}}`` object) and documented headers."""

from __future__ import annotations

import pytest
import schemathesis
import sqlalchemy as sa
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_headers_conformance,
                                 response_schema_conformance, status_code_conformance)

from atelier.models.registry import create_model
from atelier.serve import auth, ratings
from atelier.serve.app import ANY_SCOPE, CSRF_HEADER, SESSION_COOKIE, create_app
from atelier.serve.db import Database, JobFile
from atelier.serve.jobs import INPUT_PREFIX
from atelier.serve.settings import SCOPES, ServeConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: schemathesis's own response checks: not a 5xx, and conformance of status, media type, body and headers
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
MODELS = ["cgan", "vae", "style", "flow", "nope"]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-studio")
    torch.manual_seed(0)
    create_model("dcgan", g_width=8, d_width=8, latent_dim=8, num_classes=10).save_pretrained(root / "models" / "cgan")
    create_model("vae", width=8, hidden=0, latent_dim=4).save_pretrained(root / "models" / "vae")
    create_model("transformer-net", width=4, n_res_blocks=1).save_pretrained(root / "models" / "style")
    create_model("flow", width=4, levels=1, blocks_per_level=1, attention=False, resolution=8,
                 sample_steps=1).save_pretrained(root / "models" / "flow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATELIER_HOME", str(root / "home"))
        # no job workers: queued jobs (a Gatys job of 500 steps at 1024 px, say) are recorded, never run.
        # The login route is fuzzed with wrong tokens: the failed-login limit has its own test.
        cfg = ServeConfig(models=(str(root / "models"),), db=str(root / "studio.sqlite"), workers=0, queue_size=8,
                          max_image_side=256, failed_logins="100000/minute")
        db = Database(cfg.db_url)
        # one principal, one token per scope: what one of them makes, the others may look at
        tokens = {scope: auth.create_token(db, "fuzzer", [scope]).token for scope in SCOPES}
        app = create_app(cfg, db=db)
        yield app, db, tokens


@pytest.fixture(scope="module")
def objects(fuzzed) -> dict[str, str]:
    """A finished job with a file and a rating question of the fuzzer's, so that the routes taking their ids
    are also fuzzed past the 404 (a queued job is never offered: its event stream would wait forever)."""
    app, db, tokens = fuzzed
    studio = app.state.studio
    owner = auth.authenticate(db, tokens["read"]).principal_id
    job_id = studio.jobs.submit(owner, "generate", {"n": 4, "seed": 0, "label": None, "truncation": None,
                                                    "format": "png"}, model="cgan")
    studio.jobs.execute(job_id)  # run here, as a worker would
    with db.session() as s:
        name = s.scalar(sa.select(JobFile.name).where(JobFile.job_id == job_id,
                                                      ~JobFile.name.startswith(INPUT_PREFIX)))
    task_id = ratings.new_pair(db, studio.catalog, owner).id
    assert name is not None
    return {"job_id": job_id, "name": name, "task_id": task_id}


@pytest.fixture(scope="module")
def api_schema(fuzzed):
    app, db, tokens = fuzzed
    return schemathesis.openapi.from_asgi("/openapi.json", app,
                                          headers={"Authorization": f"Bearer {tokens['read']}"})


def _credentials(db: Database, tokens: dict[str, str], scope: str | None) -> dict[str, object]:
    """label -> headers (or a function making fresh ones) for an operation needing ``scope``."""
    own = scope if scope in tokens else "read"  # public routes and one's own session: any token

    def session() -> dict[str, str]:  # a new one each time: the fuzzer may log out (DELETE /v1/session)
        session_id, csrf = auth.open_session(db, auth.authenticate(db, tokens[own]), 1.0)
        return {"Cookie": f"{SESSION_COOKIE}={session_id}", CSRF_HEADER: csrf}

    other = next(s for s in SCOPES if s not in (own, "admin"))
    return {f"{own} token": {"Authorization": f"Bearer {tokens[own]}"},
            f"{own} session": session,
            f"{other} token": {"Authorization": f"Bearer {tokens[other]}"},
            "admin token": {"Authorization": f"Bearer {tokens['admin']}"}}


def test_no_request_from_the_schema_gets_a_server_error_or_breaks_the_schema(fuzzed, objects, api_schema) -> None:
    app, db, tokens = fuzzed
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 30
    statuses: dict[int, int] = {}
    used: dict[str, int] = {}

    for operation in operations:
        scope = operation.definition.raw.get("x-scope")
        assert scope in (*SCOPES, ANY_SCOPE, None), (operation.label, scope)
        credentials = _credentials(db, tokens, scope)

        @given(case=operation.as_strategy(), model=st.sampled_from(MODELS), who=st.sampled_from(sorted(credentials)),
               real=st.booleans())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case, model, who, real) -> None:
            params = case.path_parameters
            if params and "name" in params and "/models/" in case.path:
                params["name"] = model  # mostly served models: get past the 404 to real work
            if params and real:  # half the time the fuzzer's own objects, the rest whatever it made up
                params.update({k: v for k, v in objects.items() if k in params})
            if params and real and "key_id" in params:  # a real token to revoke (a throwaway one)
                params["key_id"] = auth.create_token(db, "throwaway", ["read"]).key_id
            headers = credentials[who]
            headers = headers() if callable(headers) else dict(headers)
            used[who.split()[-1]] = used.get(who.split()[-1], 0) + 1
            response = case.call(headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            where = (case.method, case.formatted_path, who)
            # 5xx, undocumented status or media type, a body or header not as the schema says: a failure
            case.validate_response(response, checks=CHECKS, headers=headers)
            assert b"Traceback" not in response.content, where
            if response.status_code >= 400:  # every refusal is a JSON error naming the problem
                error = response.json()["error"]
                assert error["code"] and len(error["message"]) > 5, (*where, response.text)

        check()
    print("statuses", dict(sorted(statuses.items())), "credentials", used)
    # the fuzzer got past validation to real work, and was refused too: both sides were exercised
    assert sum(v for k, v in statuses.items() if k < 300) >= 60, statuses
    assert sum(v for k, v in statuses.items() if k >= 400) >= 60, statuses
    assert statuses.get(403, 0) >= 10 and statuses.get(401, 0) >= 1, statuses  # scopes and bad tokens seen
    assert used.get("session", 0) >= 40 and used.get("token", 0) >= 100, used
