"""The long operations the studio runs as jobs, each a thin call into the library.

Each takes the :class:`~atelier.serve.jobs.JobContext` (parameters, inputs, progress, stop requests)
and the catalog of models, and returns the files its owner downloads.
"""

from __future__ import annotations

import io
import json
import re
import zipfile

import torch

from atelier.data.images import png_bytes
from atelier.serve.jobs import JobContext, JobError, job_kind
from atelier.serve.operations import (File, encode_samples, gatys, generation_provenance, model_image, numbered_name,
                                      photo, translated, upload_members)


def _pipeline(ctx: JobContext, catalog):
    if catalog is None or ctx.model not in catalog:
        raise JobError(f"model {ctx.model!r} is not served by this worker (start it with --models)")
    return catalog.pipeline(ctx.model)


@job_kind("generate")
def generate(ctx: JobContext, catalog) -> list[File]:
    """Many samples: streamed in batches, with progress; one grid PNG, a zip of PNGs or an ``.npz``."""
    p = ctx.params
    pipe = _pipeline(ctx, catalog)
    n = int(p["n"])
    images, labels = [], []
    done = 0
    for batch in pipe.sample_batches(n, seed=int(p.get("seed", 0)), label=p.get("label"),
                                     truncation=p.get("truncation"), batch_size=min(256, n)):
        images.append(batch.images)
        if batch.labels is not None:
            labels.append(batch.labels)
        done += batch.images.shape[0]
        ctx.progress(done / n, f"{done} of {n} samples", force=True)
        ctx.check(f"after {done} of {n} samples")
    all_images = torch.cat(images)
    provenance = generation_provenance(catalog, ctx.model, seed=int(p.get("seed", 0)), n=n, label=p.get("label"),
                                       truncation=p.get("truncation"))
    return [encode_samples(all_images, torch.cat(labels) if labels else None, p.get("format", "npz"),
                           pipe.class_names, provenance=provenance)]


@job_kind("gatys")
def gatys_job(ctx: JobContext, catalog) -> list[File]:
    """Gatys optimisation of an uploaded content image with an uploaded style image; previews as it goes."""
    p, limits = ctx.params, ctx.queue.settings
    content = photo(ctx.input("content"), max_pixels=limits.max_upload_pixels, max_side=limits.max_image_side,
                    what="the content image")
    style = photo(ctx.input("style"), max_pixels=limits.max_upload_pixels, max_side=limits.max_image_side,
                  what="the style image")

    def on_progress(done: int, planned: int, preview: bytes | None) -> None:
        ctx.progress(min(0.99, done / max(1, planned)), f"iteration {done} of about {planned}", preview=preview)

    ctx.progress(0.0, "optimising", force=True)
    return [gatys(content, style, steps=int(p["steps"]), size=int(p["size"]), seed=int(p.get("seed", 0)),
                  on_progress=on_progress, should_stop=ctx.should_stop)]


@job_kind("translate")
def translate_job(ctx: JobContext, catalog) -> list[File]:
    """A CycleGAN over many uploaded images (a zip of PNG/JPEG files or one image): a zip of results.

    The stored input is what :func:`~atelier.serve.operations.translate_inputs` kept of the upload (the
    model's inputs as bare PNGs named ``00000-<safe stem>.png``); each result is named after its input's
    number and safe stem, never after a path the upload gave."""
    p = ctx.params
    direction = p.get("direction", "a2b")
    pipe = _pipeline(ctx, catalog)
    limits = ctx.queue.settings
    blobs = upload_members(ctx.input("images"), max_bytes=limits.max_upload_bytes)  # DataError: the job fails
    if len(blobs) == 1:
        image = model_image(blobs[0][1], pipe, max_pixels=limits.max_upload_pixels, direction=direction)
        return [translated(pipe, image[None], direction)]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for k, (stem, blob) in enumerate(blobs):
            image = model_image(blob, pipe, max_pixels=limits.max_upload_pixels, what=f"image {k + 1}",
                                direction=direction)
            result = pipe.translate(image[None], direction)[0]
            z.writestr(numbered_name(k, re.sub(r"^\d{5}-?", "", stem)), png_bytes(result))
            ctx.progress((k + 1) / len(blobs), f"{k + 1} of {len(blobs)} images", force=True)
            ctx.check(f"after {k + 1} of {len(blobs)} images")
    return [File("translated.zip", "application/zip", out.getvalue())]


@job_kind("evaluate")
def evaluate_job(ctx: JobContext, catalog) -> list[File]:
    """FID/KID (and what else is asked) of a served model against its own dataset's test split."""
    from atelier.metrics.evaluate import EvalConfig, evaluate_source

    p = ctx.params
    if catalog is None or ctx.model not in catalog:
        raise JobError(f"model {ctx.model!r} is not served by this worker")
    entry = catalog.get(ctx.model)
    ctx.progress(0.01, "evaluating", force=True)
    cfg = EvalConfig(n=int(p.get("n", 2000)), seed=int(p.get("seed", 0)),
                     metrics=tuple(p.get("metrics", ("fid", "kid"))), **({"data": p["data"]} if p.get("data") else {}))
    result = evaluate_source(str(entry.path), cfg, progress=False, should_stop=ctx.should_stop)
    data = result.to_json()
    return [File("metrics.json", "application/json", json.dumps(data, indent=2, default=str).encode())]
