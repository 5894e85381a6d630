"""Protecting model files: encrypted envelopes (AES-256-GCM, wrapped data keys) and signed manifests
(Ed25519), on the ``cryptography`` library's primitives. Knows files and bytes, never models."""
