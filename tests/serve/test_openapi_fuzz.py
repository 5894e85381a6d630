"""The OpenAPI schema is the contract: schemathesis generates requests for every operation from it
(valid and invalid bodies, paths and forms) and the studio must answer each without a server error,
with a JSON error naming the problem whenever it refuses."""

from __future__ import annotations

import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, settings

from atelier.models.registry import create_model
from atelier.serve import auth
from atelier.serve.app import create_app
from atelier.serve.db import Database
from atelier.serve.settings import ServeConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-studio")
    torch.manual_seed(0)
    create_model("dcgan", g_width=8, d_width=8, latent_dim=8, num_classes=10).save_pretrained(root / "models" / "cgan")
    create_model("vae", width=8, hidden=0, latent_dim=4).save_pretrained(root / "models" / "vae")
    create_model("transformer-net", width=4, n_res_blocks=1).save_pretrained(root / "models" / "style")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATELIER_HOME", str(root / "home"))
        # no job workers: queued jobs (a Gatys job of 500 steps at 1024 px, say) are recorded, never run
        cfg = ServeConfig(models=(str(root / "models"),), db=str(root / "studio.sqlite"), workers=0, queue_size=8,
                          max_image_side=256)
        db = Database(cfg.db_url)
        token = auth.create_token(db, "fuzzer", ["admin"]).token
        yield create_app(cfg, db=db), token


@pytest.fixture(scope="module")
def api_schema(fuzzed):
    app, token = fuzzed
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Bearer {token}"})


def test_no_request_from_the_schema_gets_a_server_error(fuzzed, api_schema) -> None:
    from hypothesis import given, strategies as st

    app, token = fuzzed
    headers = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 30
    statuses: dict[int, int] = {}

    for operation in operations:
        @given(case=operation.as_strategy(), model=st.sampled_from(["cgan", "vae", "style", "nope"]))
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case, model) -> None:
            if case.path_parameters and "name" in case.path_parameters and "/models/" in case.path:
                case.path_parameters["name"] = model  # mostly served models: get past the 404 to real work
            response = case.call(headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            where = (case.method, case.formatted_path)
            assert response.status_code < 500, (*where, response.content[:500])
            assert b"Traceback" not in response.content, where
            if response.status_code >= 400:  # every refusal is a JSON error naming the problem
                error = response.json()["error"]
                assert error["code"] and len(error["message"]) > 5, (*where, response.text)

        check()
    print("statuses", dict(sorted(statuses.items())))
    # the fuzzer got past validation to real work, and was refused too: both sides were exercised
    assert sum(v for k, v in statuses.items() if k < 300) >= 40 and sum(v for k, v in statuses.items() if k >= 400) >= 40, statuses
