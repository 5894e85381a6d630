"""Data augmentation: classic pipelines (kornia), DiffAugment and ADA for GANs, generative augmentation.

Built by a later issue; the package exists so the layout shows where it plugs in (data -> augment -> models).
"""
