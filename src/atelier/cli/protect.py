"""``atelier protect``: encrypted model files (keygen, encrypt, decrypt, rotate, inspect), signatures (sign,
verify) and the memorisation audit (audit-data: near-copies and membership inference).

Keys come from a file, an environment variable, or a passphrase (typed, or from an environment
variable); never from the command line, where other users of the machine could read them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def key_from_args(args, prefix: str = "", *, required: bool = True, confirm: bool = False):
    """The :class:`~atelier.protect.envelope.Key` the flags name (``prefix`` "new_" for rotation's new key)."""
    from atelier.protect.envelope import KEY_ENV, Key

    key_file, key_env = getattr(args, f"{prefix}key_file"), getattr(args, f"{prefix}key_env")
    pass_env, ask = getattr(args, f"{prefix}passphrase_env"), getattr(args, f"{prefix}passphrase")
    given = [x for x in (key_file, key_env, pass_env, ask or None) if x]
    flag = "--" + prefix.replace("_", "-")
    if len(given) > 1:
        raise ValueError(f"give one of {flag}key-file, {flag}key-env, {flag}passphrase-env, {flag}passphrase")
    kdf = getattr(args, "kdf", "argon2id") or "argon2id"
    if key_file:
        return Key.from_file(key_file)
    if key_env:
        return Key.from_env(key_env)
    if pass_env:
        value = os.environ.get(pass_env)
        if not value:
            raise ValueError(f"the environment variable {pass_env} holds no passphrase")
        return Key(passphrase=value.encode(), kdf=kdf)
    if ask:
        what = "new passphrase" if prefix else "passphrase"
        first = _ask(f"{what}: ", flag)
        if confirm and _ask(f"{what} again: ", flag) != first:
            raise ValueError("the two passphrases differ")
        return Key(passphrase=first.encode(), kdf=kdf)
    if not prefix and os.environ.get(KEY_ENV):
        return Key.from_env(KEY_ENV)
    if required:
        raise ValueError(f"no key: give {flag}key-file, {flag}key-env, {flag}passphrase-env or {flag}passphrase"
                         + (f" (or set {KEY_ENV})" if not prefix else ""))
    return None


def _ask(prompt: str, flag: str = "--") -> str:
    """A passphrase typed at the terminal; a clear error where there is none (a script, a pipe)."""
    import getpass
    import sys
    import warnings

    if not sys.stdin.isatty():
        raise ValueError(f"no terminal to type a passphrase at; give it with {flag}passphrase-env NAME")
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            return getpass.getpass(prompt)
        except (EOFError, getpass.GetPassWarning):
            raise ValueError(f"no passphrase was typed; give it with {flag}passphrase-env NAME") from None


def add_key_flags(parser: argparse.ArgumentParser, prefix: str = "", what: str = "the key") -> None:
    flag = "--" + prefix.replace("_", "-")
    parser.add_argument(f"{flag}key-file", default=None, help=f"{what}: a file written by `atelier protect keygen`")
    parser.add_argument(f"{flag}key-env", default=None, help=f"{what}: the name of an environment variable holding it")
    parser.add_argument(f"{flag}passphrase-env", default=None,
                        help=f"{what}: a passphrase, from this environment variable")
    parser.add_argument(f"{flag}passphrase", action="store_true", help=f"{what}: a passphrase, typed at a prompt")


def add_model_key_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that open an encrypted model (model.atlenc) for a command that loads one."""
    add_key_flags(parser, what="an encrypted model's key (else $ATELIER_MODEL_KEY)")


def model_key(args):
    """The key the flags of :func:`add_model_key_flags` name, else ``$ATELIER_MODEL_KEY``, else None (a
    model that turns out to be encrypted then says which flags open it)."""
    return key_from_args(args, required=False)


def _cmd_keygen(args) -> int:
    from atelier.io import atomic_open
    from atelier.protect.envelope import Key

    out = Path(args.out)
    if args.signing:
        from atelier.protect.signing import generate_keypair, key_fingerprint, load_public_key

        passphrase = None
        if args.passphrase_env:
            passphrase = os.environ.get(args.passphrase_env) or None
            if passphrase is None:
                raise ValueError(f"the environment variable {args.passphrase_env} holds no passphrase")
        private, public = generate_keypair(out, passphrase=passphrase)
        print(f"wrote an Ed25519 signing key to {private} (mode 600{', passphrase-protected' if passphrase else ''}) "
              f"and its public key to {public} ({key_fingerprint(load_public_key(public))}); share the .pub file "
              "with whoever verifies your models")
        return 0
    if out.exists():
        raise FileExistsError(f"{out} exists; a key file is never overwritten (its models would be lost with it)")
    key = Key.generate()
    with atomic_open(out) as f:
        f.write((key.to_text() + "\n").encode())
    os.chmod(out, 0o600)
    print(f"wrote a 256-bit key to {out} (mode 600; key id {key.key_id()}). Keep a copy: models sealed with it "
          "cannot be opened without it.")
    return 0


def _cmd_encrypt(args) -> int:
    from atelier.models.pretrained import resolve_pretrained
    from atelier.protect.envelope import seal_model_dir

    key = key_from_args(args, confirm=True)
    ckpt, _ = resolve_pretrained(args.model)
    path = seal_model_dir(ckpt, args.out, key)
    print(f"sealed {ckpt} into {path} ({path.stat().st_size:,} bytes, key id {key.key_id()})")
    return 0


def _cmd_decrypt(args) -> int:
    from atelier.io import atomic_write_bytes
    from atelier.protect.envelope import open_envelope, unbundle, ENVELOPE_NAME

    key = key_from_args(args)
    src = Path(args.sealed)
    envelope = src / ENVELOPE_NAME if src.is_dir() else src
    config, weights = unbundle(open_envelope(envelope, key))  # verified in memory before anything is written
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "model.safetensors", weights)
    atomic_write_bytes(out / "config.json", config)
    print(f"wrote the plain model to {out} (config.json, model.safetensors)")
    return 0


def _cmd_rotate(args) -> int:
    from atelier.protect.envelope import ENVELOPE_NAME, rotate

    old = key_from_args(args)
    new = key_from_args(args, "new_", confirm=True)
    src = Path(args.sealed)
    envelope = src / ENVELOPE_NAME if src.is_dir() else src
    rotate(envelope, old, new)
    print(f"{envelope}: the data key is now wrapped by key {new.key_id()}; the old key no longer opens it")
    return 0


def _cmd_inspect(args) -> int:
    from atelier.protect.envelope import ENVELOPE_NAME, inspect_envelope

    src = Path(args.sealed)
    info = inspect_envelope(src / ENVELOPE_NAME if src.is_dir() else src)
    print(f"{info.path}: Atelier envelope v{info.version}, AES-256-GCM in {info.chunk_size:,}-byte chunks\n"
          f"  key id {info.key_id} ({info.kdf}); plaintext {info.plaintext_size:,} bytes, "
          f"sha256 {info.plaintext_sha256}\n  file id {info.file_id}")
    return 0


def _cmd_sign(args) -> int:
    from atelier.protect.signing import is_encrypted_private_key, load_private_key, sign_directory, verify_directory

    passphrase = None
    if is_encrypted_private_key(args.key):
        passphrase = os.environ.get(args.passphrase_env) if args.passphrase_env else _ask(f"passphrase of {args.key}: ")
    key = load_private_key(args.key, passphrase)
    manifest = sign_directory(args.model, key, signer=args.signer or "")
    verified = verify_directory(args.model, [key.public_key()])
    print(f"signed {len(verified.files)} files of {args.model} with {verified.fingerprint}: {manifest}")
    return 0


def _cmd_verify(args) -> int:
    from atelier.protect.signing import load_public_keys, verify_directory

    trusted = [k for path in args.trusted for k in load_public_keys(path)]
    verified = verify_directory(args.model, trusted)
    print(f"{args.model}: a valid signature by {verified.fingerprint}"
          f"{' (' + verified.signer + ')' if verified.signer else ''} over {len(verified.files)} files, "
          f"signed {verified.created:%Y-%m-%d %H:%M} UTC")
    return 0


def _cmd_audit_data(args) -> int:
    import json
    import sys

    from atelier.cli.errors import warnings_to_stderr
    from atelier.cli.limits import check_int
    from atelier.data.base import ConversionNote
    from atelier.io import atomic_write_json
    from atelier.metrics.membership import (MAX_AUDIT_N, MAX_AUDIT_SAMPLES, MAX_BOOTSTRAP, MAX_ELBO_SAMPLES,
                                            audit_data, choose_attack, load_audit_data)
    from atelier.pipelines import Pipeline
    from atelier.signals import Stopped, stop_on_signals

    check_int(args.n, "--n", low=2, high=MAX_AUDIT_N)
    check_int(args.samples, "--samples", low=10, high=MAX_AUDIT_SAMPLES)
    check_int(args.bootstrap, "--bootstrap", low=0, high=MAX_BOOTSTRAP)
    check_int(args.elbo_samples, "--elbo-samples", high=MAX_ELBO_SAMPLES)
    check_int(args.seed, "--seed", low=0, high=2**63 - 1)
    # Ctrl-C / SIGTERM stop between stages and batches, with nothing written
    with warnings_to_stderr(ConversionNote, prefix="note: "), stop_on_signals() as stop:
        pipe = Pipeline.load(args.run, key=model_key(args))
        choose_attack(pipe.model, args.attack)  # a model that cannot be audited says so before the data loads
        cfg = pipe.model.config
        sets = load_audit_data(pipe.config, resolution=cfg.resolution, channels=cfg.channels, data=args.data,
                               data_dir=args.data_dir, split=args.split, heldout=args.heldout)
        try:
            report = audit_data(pipe, sets.members.images, sets.nonmembers.images, member_labels=sets.members.labels,
                                nonmember_labels=sets.nonmembers.labels, n=args.n, n_samples=args.samples,
                                attack=args.attack, seed=args.seed, bootstrap=args.bootstrap,
                                elbo_samples=args.elbo_samples, also_seen=sets.also_seen, notes=sets.notes,
                                sources={**sets.sources, "model": str(args.run)}, should_stop=stop)
        except Stopped as exc:
            print(f"stopped by {stop.name} ({exc.where}): the audit was abandoned and nothing was written",
                  file=sys.stderr)
            return stop.exit_code
    if args.out:
        atomic_write_json(args.out, report.to_json())
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table())
    if args.out:
        print(f"report: {args.out}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _add_audit_parser(psub) -> None:
    from atelier.metrics.membership import ATTACKS, MAX_AUDIT_N, MAX_AUDIT_SAMPLES, MAX_BOOTSTRAP, MAX_ELBO_SAMPLES

    a = psub.add_parser("audit-data", help="does a trained model give away its training images? Near-copies "
                                           "and a membership-inference attack",
                        description="Scores the run's training images and held-out images of the same dataset "
                                    "with a membership-inference attack (a GAN's discriminator, a VAE's ELBO, or "
                                    "the distance to the model's samples) and reports the attack's AUC, advantage "
                                    "(TPR - FPR) and TPR at 1%% FPR with bootstrap intervals, the share of "
                                    "samples that are near-copies of training images, and a verdict. The "
                                    "training images are those of the run's saved data config; see "
                                    "docs/privacy.md.")
    a.add_argument("run", help="run directory, checkpoint, saved model or encrypted model")
    a.add_argument("--data", default=None, help="the dataset it was trained on: digits | mnist | cifar10 | folder:PATH "
                                                "(default: the run's own)")
    a.add_argument("--data-dir", default=None)
    a.add_argument("--split", default=None, help="the split (or slice, e.g. train[30000:]) it was trained on "
                                                 "(default: the run's own, else train)")
    a.add_argument("--heldout", default="test", help="images it never saw: another split of the dataset or a "
                                                     "slice of one (e.g. train[:30000]), or folder:PATH "
                                                     "(default: test)")
    a.add_argument("--attack", choices=ATTACKS, default="auto", help="auto: the discriminator of a GAN, the ELBO of "
                                                                     "a VAE, else the distance to samples")
    a.add_argument("--n", type=int, default=1000, help=f"images scored per side, 2..{MAX_AUDIT_N:,} (fewer if the "
                                                       "data holds fewer)")
    a.add_argument("--samples", type=int, default=2000, help=f"samples drawn for the near-copy check (and the "
                                                             f"distance attack), 10..{MAX_AUDIT_SAMPLES:,}")
    a.add_argument("--seed", type=int, default=0, help="which images are scored, the samples, the bootstrap")
    a.add_argument("--bootstrap", type=int, default=1000, help=f"resamples for the intervals, 0..{MAX_BOOTSTRAP:,}")
    a.add_argument("--elbo-samples", type=int, default=8, help=f"VAE: posterior draws per image, "
                                                               f"1..{MAX_ELBO_SAMPLES}")
    a.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    a.add_argument("--out", default=None, help="also write the report as JSON to this file")
    add_model_key_flags(a)
    a.set_defaults(func=_cmd_audit_data)


def add_protect_parser(sub) -> None:
    p = sub.add_parser("protect", help="encrypted and signed model files: keygen, encrypt, decrypt, rotate, inspect, "
                                       "sign, verify; audit-data: does a model give away its training images",
                       description="Seal a saved model (config and weights) in an AES-256-GCM envelope that opens "
                                   "only in memory, with a key file, an environment variable or a passphrase "
                                   "(Argon2id or scrypt). The format: docs/envelope.md.")
    psub = p.add_subparsers(dest="protect_command", required=True)
    k = psub.add_parser("keygen", help="write a new random 256-bit key to a file (mode 600), or with --signing an "
                                       "Ed25519 key pair (OUT and OUT.pub)")
    k.add_argument("out")
    k.add_argument("--signing", action="store_true", help="an Ed25519 signing key pair instead of an encryption key")
    k.add_argument("--passphrase-env", default=None, help="--signing: protect the private key with this passphrase")
    k.set_defaults(func=_cmd_keygen)
    g = psub.add_parser("sign", help="sign a model directory: MANIFEST.json (every file's SHA-256) and MANIFEST.sig")
    g.add_argument("model")
    g.add_argument("--key", required=True, help="the Ed25519 private key (atelier protect keygen --signing)")
    g.add_argument("--signer", default=None, help="a label recorded in the manifest")
    g.add_argument("--passphrase-env", default=None, help="the private key's passphrase, from this variable")
    g.set_defaults(func=_cmd_sign)
    v = psub.add_parser("verify", help="check a model directory's signature against trusted public keys")
    v.add_argument("model")
    v.add_argument("--trusted", nargs="+", required=True, help="public key files (.pub; several keys a file allowed)")
    v.set_defaults(func=_cmd_verify)
    e = psub.add_parser("encrypt", help="seal a run, checkpoint or model directory into OUT/model.atlenc")
    e.add_argument("model")
    e.add_argument("--out", required=True)
    add_key_flags(e)
    e.add_argument("--kdf", choices=("argon2id", "scrypt"), default="argon2id", help="for passphrases")
    e.set_defaults(func=_cmd_encrypt)
    d = psub.add_parser("decrypt", help="write the plain model of a sealed one (verified first)")
    d.add_argument("sealed")
    d.add_argument("--out", required=True)
    add_key_flags(d)
    d.set_defaults(func=_cmd_decrypt)
    r = psub.add_parser("rotate", help="re-wrap the data key under a new key (the weights are not re-encrypted)")
    r.add_argument("sealed")
    add_key_flags(r, what="the current key")
    add_key_flags(r, "new_", what="the new key")
    r.add_argument("--kdf", choices=("argon2id", "scrypt"), default="argon2id", help="for a new passphrase")
    r.set_defaults(func=_cmd_rotate)
    i = psub.add_parser("inspect", help="what a sealed model says about itself (no key needed)")
    i.add_argument("sealed")
    i.set_defaults(func=_cmd_inspect)
    _add_audit_parser(psub)


__all__ = ["add_protect_parser", "key_from_args", "add_key_flags"]
