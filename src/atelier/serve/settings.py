"""The studio's settings: one typed config, validated like every other Atelier config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import annotated_types as at

from atelier.config import Config

#: Scopes a token may hold. ``admin`` implies every other one.
SCOPES = ("read", "generate", "stylize", "rate", "admin")


def serve_home() -> Path:
    """``$ATELIER_HOME/serve`` (or ``~/.cache/atelier/serve``): the default database lives here."""
    root = os.environ.get("ATELIER_HOME") or "~/.cache/atelier"
    return Path(root).expanduser() / "serve"


def default_db_url() -> str:
    return f"sqlite:///{(serve_home() / 'studio.sqlite').resolve()}"


@dataclass
class ServeConfig(Config):
    """What ``atelier serve`` runs with; every limit is checked before any work is done."""

    models: tuple[str, ...] = ()
    checkpoints: bool = False  # also serve every checkpoint of a run, as RUN@CHECKPOINT
    key_file: str = ""  # opens encrypted models (model.atlenc); a path, never the key itself
    key_env: str = ""  # or: the name of the environment variable holding it
    require_signed: bool = False  # serve only models signed by one of the trusted keys
    trusted: tuple[str, ...] = ()  # public key files (atelier protect keygen --signing)
    db: str = ""  # a SQLAlchemy URL or a file path; "" is default_db_url()
    workers: Annotated[int, at.Interval(ge=0, le=64)] = 1  # job workers inside the server process
    max_n: Annotated[int, at.Interval(ge=1, le=4096)] = 64  # images per quick request (more: a job)
    max_job_n: Annotated[int, at.Interval(ge=1, le=100_000)] = 10_000  # images per generation job
    max_steps: Annotated[int, at.Interval(ge=2, le=1000)] = 64  # interpolation frames
    max_gatys_steps: Annotated[int, at.Interval(ge=1, le=5000)] = 500
    max_image_side: Annotated[int, at.Interval(ge=16, le=8192)] = 1024  # uploads are resized below this
    max_upload_bytes: Annotated[int, at.Interval(ge=1024, le=2**30)] = 16 * 2**20
    max_upload_pixels: Annotated[int, at.Interval(ge=256, le=2**28)] = 25_000_000
    max_batch: Annotated[int, at.Interval(ge=1, le=4096)] = 64  # dynamic batching: images per forward pass
    max_wait_ms: Annotated[float, at.Interval(ge=0.0, le=1000.0)] = 5.0  # dynamic batching: wait for company
    max_pending: Annotated[int, at.Interval(ge=1, le=1_000_000)] = 256  # images waiting per model before 429 (~0.3 s)
    queue_size: Annotated[int, at.Interval(ge=1, le=100_000)] = 64  # queued jobs before 429
    jobs_per_user: Annotated[int, at.Interval(ge=1, le=1000)] = 2  # running or queued jobs per principal
    session_hours: Annotated[float, at.Interval(ge=0.01, le=24 * 30)] = 12.0
    job_timeout_s: Annotated[float, at.Interval(ge=1.0, le=7 * 86400)] = 3600.0
    failed_logins: str = "10/minute"  # per client address, then 429 until the window frees ("" = no limit)
    user_rate: str = ""  # requests per principal, e.g. "600/minute" ("" = no limit)
    device: str = "cpu"

    @property
    def db_url(self) -> str:
        return self.db or default_db_url()

    def validate(self) -> None:
        super().validate()
        from limits import parse

        for name in ("failed_logins", "user_rate"):
            value = getattr(self, name)
            if value:
                try:
                    parse(value)
                except ValueError:
                    from atelier.config import ConfigError

                    raise ConfigError(f"{name} is a rate such as 10/minute, got {value!r}", field=name) from None
        if self.require_signed and not self.trusted:
            from atelier.config import ConfigError

            raise ConfigError("require_signed needs trusted public keys (--trusted KEY.pub ...)", field="trusted")

    def model_key(self):
        """The key for encrypted models, from its file or environment variable (None when neither is set)."""
        from atelier.protect.envelope import Key

        if self.key_file and self.key_env:
            raise ValueError("give the models' key by --key-file or --key-env, not both")
        if self.key_file:
            return Key.from_file(self.key_file)
        if self.key_env:
            return Key.from_env(self.key_env)
        return None

    def trusted_keys(self) -> list | None:
        """The trusted public keys when signatures are required, else None."""
        if not self.require_signed:
            return None
        from atelier.protect.signing import load_public_keys

        return [k for path in self.trusted for k in load_public_keys(path)]
