"""Interpolation: between two seeds, two real images (VAE) or two classes (conditional models).

Every function returns the frames (steps, C, R, R) in [-1, 1], both ends included, ready for
``save_grid(frames, path, nrow=len(frames))`` (a strip) or :func:`atelier.report.gif.save_gif`.
"""

from __future__ import annotations

import torch

from atelier.creative.latent import (as_model_images, check_class, fixed_labels, interpolation, positions,
                                     require_conditional, require_encoder, seed_latents)


def class_mix(model, class_a: int, class_b: int, t: torch.Tensor) -> torch.Tensor:
    """Soft class weights (T, K): row i is (1 - t_i) one-hot(a) + t_i one-hot(b)."""
    k = model.config.num_classes
    t = t.float()[:, None]
    eye = torch.eye(k)
    return (1 - t) * eye[class_a] + t * eye[class_b]


def interpolate_latents(model, z_a: torch.Tensor, z_b: torch.Tensor, steps: int = 10, *, labels=None,
                        method: str = "slerp") -> torch.Tensor:
    """Decode ``steps`` latents on the ``method`` path from ``z_a`` to ``z_b`` (each (D,)).
    ``labels``: None, or labels / class weights for all ``steps`` frames."""
    path = interpolation(method)(z_a.reshape(-1), z_b.reshape(-1), positions(steps))  # (steps, D)
    return model.generate(path.float(), labels)


def interpolate_seeds(model, seed_a: int, seed_b: int, steps: int = 10, *, label: int | None = None,
                      method: str = "slerp", truncation: float | None = None) -> torch.Tensor:
    """Frames from the prior latent of ``seed_a`` to that of ``seed_b`` (see ``seed_latents``).

    A conditional model draws every frame as class ``label`` (default 0); an unconditional one
    refuses a label. ``method``: "slerp" (default, keeps latents at a typical norm) or "lerp".
    """
    z = seed_latents(model, [seed_a, seed_b], truncation=truncation)
    return interpolate_latents(model, z[0], z[1], steps, labels=fixed_labels(model, label, steps), method=method)


def _pair_labels(model, labels) -> tuple[int, int] | None:
    if not model.conditional:
        if labels is not None:
            raise ValueError("this VAE is not class-conditional: it takes no labels")
        return None
    if labels is None:
        raise ValueError("this VAE is class-conditional: pass the two images' labels (labels=(a, b))")
    if isinstance(labels, int) or torch.is_tensor(labels) and labels.dim() == 0:
        labels = (labels, labels)
    labels = [int(x) for x in labels]
    if len(labels) != 2:
        raise ValueError(f"labels must be one class index or a pair (a, b), got {len(labels)} values")
    return check_class(model, labels[0], "label of image A"), check_class(model, labels[1], "label of image B")


@torch.no_grad()
def interpolate_images(vae, image_a: torch.Tensor, image_b: torch.Tensor, steps: int = 10, labels=None) -> torch.Tensor:
    """Frames between two real images (C, R, R) (uint8 or [-1, 1]): both are encoded to their
    posterior means, the path between the means is decoded.

    The path is a straight line, not slerp: posterior means are not prior draws. They do not sit
    on the sqrt(D) shell (an informative dimension has a mean well inside the prior's spread, an
    unused one has mean ~0), so there is no shell to stay on, and the line between two means is the
    path the encoder's own geometry suggests. The ends are exactly the two reconstructions.

    ``labels`` (conditional VAEs): one class index for both images or a pair (label_a, label_b); the
    decoder's class weights then move from one label to the other along with the latent.
    """
    require_encoder(vae, "interpolating between real images")
    pair = _pair_labels(vae, labels)
    images = torch.cat([as_model_images(vae, torch.as_tensor(image)[None], name)
                        for image, name in ((image_a, "image_a"), (image_b, "image_b"))])
    t = positions(steps)
    enc_labels = torch.tensor(pair) if pair is not None else None
    mean, _ = vae.encode_images(images, enc_labels)
    dec_labels = class_mix(vae, pair[0], pair[1], t) if pair is not None else None
    return interpolate_latents(vae, mean[0], mean[1], steps, labels=dec_labels, method="lerp")


def interpolate_classes(model, class_a: int, class_b: int, steps: int = 10, seed: int = 0, *,
                        truncation: float | None = None) -> torch.Tensor:
    """One fixed latent (that of ``seed``) decoded with class weights moving from ``class_a`` to
    ``class_b``: the "style" stays, the class changes. Needs a class-conditional model; the ends
    equal generation with the hard labels."""
    require_conditional(model, "class-to-class interpolation")
    a, b = check_class(model, class_a, "class A"), check_class(model, class_b, "class B")
    t = positions(steps)
    z = seed_latents(model, [seed], truncation=truncation).expand(steps, -1)
    return model.generate(z.contiguous(), class_mix(model, a, b, t))
