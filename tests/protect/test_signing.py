"""Signed model manifests: key files, signing, and every way a signed directory can be altered."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atelier.io import FileFormatError
from atelier.protect.signing import (
    FORMAT,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    VERSION,
    ManifestEntry,
    SignatureError,
    VerifiedManifest,
    generate_keypair,
    is_encrypted_private_key,
    key_fingerprint,
    load_private_key,
    load_public_key,
    load_public_keys,
    sign_directory,
    verify_directory,
)

FILES = {
    "weights.safetensors": bytes(range(256)) * 12,
    "config.json": b'{"family": "gan", "latent": 64}\n',
    "sub/deeper/notes.txt": b"a nested file\n",
}

# a fixed key, for fingerprints that must never change
FIXED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def make_model_dir(path: Path, files: dict[str, bytes] = FILES) -> Path:
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    return path


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signed(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    model = make_model_dir(tmp_path / "model")
    sign_directory(model, key, signer="unit test")
    return model


def manifest_of(model: Path) -> dict:
    return json.loads((model / MANIFEST_NAME).read_bytes())


def resign_raw(model: Path, data: bytes, key: Ed25519PrivateKey) -> None:
    """Write ``data`` as the manifest with a valid signature by ``key``: what a buggy signer could make."""
    (model / MANIFEST_NAME).write_bytes(data)
    (model / SIGNATURE_NAME).write_bytes(base64.b64encode(key.sign(data)) + b"\n")


# ------------------------------------------------------------------------------------- round trip


def test_round_trip(signed: Path, key: Ed25519PrivateKey) -> None:
    result = verify_directory(signed, [key.public_key()])
    assert isinstance(result, VerifiedManifest)
    assert result.fingerprint == key_fingerprint(key)
    assert result.signer == "unit test"
    assert result.created.tzinfo is not None and result.created.utcoffset().total_seconds() == 0
    assert result.files == tuple(ManifestEntry(rel, hashlib.sha256(data).hexdigest(), len(data))
                                 for rel, data in sorted(FILES.items()))


def test_manifest_format(signed: Path, key: Ed25519PrivateKey) -> None:
    data = (signed / MANIFEST_NAME).read_bytes()
    manifest = json.loads(data)
    assert data == canonical(manifest)  # sorted keys, no whitespace, UTF-8
    assert set(manifest) == {"format", "version", "created", "signer", "key_fingerprint", "files"}
    assert manifest["format"] == FORMAT and manifest["version"] == VERSION
    assert manifest["key_fingerprint"] == key_fingerprint(key)
    assert manifest["created"].endswith("Z")
    assert [f["path"] for f in manifest["files"]] == sorted(FILES)  # the manifest and signature excluded
    signature = (signed / SIGNATURE_NAME).read_bytes()
    assert signature.endswith(b"\n") and len(base64.b64decode(signature[:-1], validate=True)) == 64
    key.public_key().verify(base64.b64decode(signature), data)  # over the manifest's exact bytes


def test_large_file_hashed_in_chunks(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    big = os.urandom((5 << 20) // 2)  # 2.5 MiB: three chunks
    model = make_model_dir(tmp_path / "m", {"big.bin": big, "empty": b""})
    sign_directory(model, key)
    files = {f.path: f for f in verify_directory(model, [key.public_key()]).files}
    assert files["big.bin"].sha256 == hashlib.sha256(big).hexdigest() and files["big.bin"].size == len(big)
    assert files["empty"].size == 0


def test_resigning_replaces_the_manifest(signed: Path, key: Ed25519PrivateKey) -> None:
    (signed / "added.bin").write_bytes(b"new")
    with pytest.raises(SignatureError):
        verify_directory(signed, [key.public_key()])
    sign_directory(signed, key, signer="again")
    result = verify_directory(signed, [key.public_key()])
    assert "added.bin" in {f.path for f in result.files} and result.signer == "again"


def test_nested_manifest_names_are_ordinary_files(signed: Path, key: Ed25519PrivateKey) -> None:
    (signed / "sub" / MANIFEST_NAME).write_bytes(b"not the top one")
    sign_directory(signed, key)
    assert f"sub/{MANIFEST_NAME}" in {f.path for f in verify_directory(signed, [key.public_key()]).files}


def test_an_added_empty_directory_is_not_an_alteration(signed: Path, key: Ed25519PrivateKey) -> None:
    (signed / "empty-dir").mkdir()
    verify_directory(signed, [key.public_key()])


def test_signature_error_is_a_file_format_error() -> None:
    assert issubclass(SignatureError, FileFormatError) and issubclass(SignatureError, ValueError)


# -------------------------------------------------------------------------------------- tampering


def _flip_byte(model: Path) -> None:
    path = model / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(model: Path) -> None:
    path = model / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:-1])


def _same_size_edit(model: Path) -> None:
    path = model / "config.json"
    path.write_bytes(path.read_bytes().replace(b"64", b"65"))


@pytest.mark.parametrize("tamper, message", [
    (_flip_byte, r"file changed: weights\.safetensors"),
    (_truncate, r"file changed: weights\.safetensors"),
    (_same_size_edit, r"file changed: config\.json"),
    (lambda m: (m / "config.json").unlink(), r"file missing: config\.json"),
    (lambda m: (m / "sub/deeper/notes.txt").unlink(), r"file missing: sub/deeper/notes\.txt"),
    (lambda m: (m / "extra.py").write_bytes(b"import os"), r"extra file: extra\.py"),
    (lambda m: (m / "sub/.hidden").write_bytes(b""), r"extra file: sub/\.hidden"),
    (lambda m: (m / "config.json").rename(m / "config2.json"),
     r"file missing: config\.json; extra file: config2\.json"),
    (lambda m: (m / "sub").rename(m / "sub2"),
     r"file missing: sub/deeper/notes\.txt; extra file: sub2/deeper/notes\.txt"),
], ids=["byte-flip", "truncated", "same-size-edit", "deleted", "deleted-nested", "added", "added-hidden",
        "renamed", "renamed-directory"])
def test_tampered_files(signed: Path, key: Ed25519PrivateKey, tamper, message: str) -> None:
    tamper(signed)
    with pytest.raises(SignatureError, match=message):
        verify_directory(signed, [key.public_key()])


def _edit(field: str, value):
    def edit(manifest: dict, model: Path, other: Ed25519PrivateKey) -> None:
        manifest[field] = value
    return edit


def _edit_fingerprint(manifest: dict, model: Path, other: Ed25519PrivateKey) -> None:
    manifest["key_fingerprint"] = key_fingerprint(other)


def _edit_sha(manifest: dict, model: Path, other: Ed25519PrivateKey) -> None:
    # the attack the signature exists for: change a file and its entry consistently
    (model / "config.json").write_bytes(b'{"evil": true}')
    entry = next(f for f in manifest["files"] if f["path"] == "config.json")
    entry["sha256"], entry["size"] = hashlib.sha256(b'{"evil": true}').hexdigest(), 14


def _edit_size(manifest: dict, model: Path, other: Ed25519PrivateKey) -> None:
    manifest["files"][0]["size"] += 1


def _edit_path(manifest: dict, model: Path, other: Ed25519PrivateKey) -> None:
    (model / "config.json").rename(model / "config.yaml")
    manifest["files"][0]["path"] = "config.yaml"


def _drop_entry(manifest: dict, model: Path, other: Ed25519PrivateKey) -> None:
    (model / "config.json").unlink()
    manifest["files"] = manifest["files"][1:]


def _add_entry(manifest: dict, model: Path, other: Ed25519PrivateKey) -> None:
    (model / "zz.bin").write_bytes(b"z")
    manifest["files"].append({"path": "zz.bin", "sha256": hashlib.sha256(b"z").hexdigest(), "size": 1})


@pytest.mark.parametrize("edit, message", [
    (_edit("format", "something-else"), "bad signature"),
    (_edit("version", 2), "bad signature"),
    (_edit("created", "2001-01-01T00:00:00Z"), "bad signature"),
    (_edit("signer", "mallory"), "bad signature"),
    (_edit_fingerprint, "untrusted key: .* names key ed25519:"),
    (_edit("key_fingerprint", "nonsense"), "bad signature"),
    (_edit_sha, "bad signature"),
    (_edit_size, "bad signature"),
    (_edit_path, "bad signature"),
    (_drop_entry, "bad signature"),
    (_add_entry, "bad signature"),
    (_edit("extra_field", 1), "bad signature"),
], ids=["format", "version", "created", "signer", "key_fingerprint", "key_fingerprint-garbage", "sha256",
        "size", "path", "entry-dropped", "entry-added", "field-added"])
def test_edited_manifest(signed: Path, key: Ed25519PrivateKey, other_key: Ed25519PrivateKey, edit,
                         message: str) -> None:
    manifest = manifest_of(signed)
    edit(manifest, signed, other_key)
    (signed / MANIFEST_NAME).write_bytes(canonical(manifest))
    with pytest.raises(SignatureError, match=message):
        verify_directory(signed, [key.public_key()])


def test_reformatted_manifest_fails(signed: Path, key: Ed25519PrivateKey) -> None:
    """The signature covers the exact bytes: the same JSON laid out differently is another manifest."""
    (signed / MANIFEST_NAME).write_text(json.dumps(manifest_of(signed), indent=2, sort_keys=True))
    with pytest.raises(SignatureError, match="bad signature"):
        verify_directory(signed, [key.public_key()])


def test_signature_swapped_from_another_directory(tmp_path: Path, signed: Path, key: Ed25519PrivateKey) -> None:
    other = make_model_dir(tmp_path / "other", {**FILES, "config.json": b"{}"})
    sign_directory(other, key, signer="unit test")
    shutil.copy(other / SIGNATURE_NAME, signed / SIGNATURE_NAME)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_directory(signed, [key.public_key()])


def test_manifest_and_signature_swapped_from_another_directory(tmp_path: Path, signed: Path,
                                                               key: Ed25519PrivateKey) -> None:
    other = make_model_dir(tmp_path / "other", {**FILES, "config.json": b"{}"})
    sign_directory(other, key)
    for name in (MANIFEST_NAME, SIGNATURE_NAME):
        shutil.copy(other / name, signed / name)
    with pytest.raises(SignatureError, match=r"file changed: config\.json"):
        verify_directory(signed, [key.public_key()])


def test_signed_by_an_untrusted_key(signed: Path, key: Ed25519PrivateKey, other_key: Ed25519PrivateKey) -> None:
    with pytest.raises(SignatureError, match=f"untrusted key: .*{key_fingerprint(key)}.*"
                                             f"not among the trusted keys \\({key_fingerprint(other_key)}\\)"):
        verify_directory(signed, [other_key.public_key()])


def test_resigned_by_an_untrusted_key(signed: Path, key: Ed25519PrivateKey, other_key: Ed25519PrivateKey) -> None:
    (signed / "config.json").write_bytes(b"tampered")
    sign_directory(signed, other_key)
    with pytest.raises(SignatureError, match="untrusted key"):
        verify_directory(signed, [key.public_key()])


def test_any_of_several_trusted_keys(signed: Path, key: Ed25519PrivateKey, other_key: Ed25519PrivateKey) -> None:
    result = verify_directory(signed, [other_key.public_key(), key.public_key()])
    assert result.fingerprint == key_fingerprint(key)


@pytest.mark.parametrize("name", [SIGNATURE_NAME, MANIFEST_NAME])
def test_unsigned(signed: Path, key: Ed25519PrivateKey, name: str) -> None:
    (signed / name).unlink()
    with pytest.raises(SignatureError, match=f"unsigned: no {name}"):
        verify_directory(signed, [key.public_key()])


def test_never_signed(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(SignatureError, match=f"unsigned: no {SIGNATURE_NAME}"):
        verify_directory(make_model_dir(tmp_path / "m"), [key.public_key()])


@pytest.mark.parametrize("content", [
    b"", b"\n", b"not base64!\n", base64.b64encode(b"x" * 63) + b"\n", base64.b64encode(b"x" * 65) + b"\n",
    b"x" * 64,  # raw bytes: the format is base64
], ids=["empty", "newline", "not-base64", "63-bytes", "65-bytes", "raw"])
def test_malformed_signature_file(signed: Path, key: Ed25519PrivateKey, content: bytes) -> None:
    (signed / SIGNATURE_NAME).write_bytes(content)
    with pytest.raises(SignatureError, match=f"{SIGNATURE_NAME} is malformed"):
        verify_directory(signed, [key.public_key()])


def test_non_canonical_base64_signature(signed: Path, key: Ed25519PrivateKey) -> None:
    text = (signed / SIGNATURE_NAME).read_bytes()
    for variant in (text.rstrip(b"\n"), text + b"\n", b" " + text, text.replace(b"==", b"")):
        (signed / SIGNATURE_NAME).write_bytes(variant)
        if variant == text.rstrip(b"\n"):
            verify_directory(signed, [key.public_key()])  # the final newline is optional
        else:
            with pytest.raises(SignatureError, match="malformed"):
                verify_directory(signed, [key.public_key()])


@pytest.mark.parametrize("data, message", [
    (b"not json", "not UTF-8 JSON"),
    (b"[]", "not a JSON object"),
    (b"\xff\xfe", "not UTF-8 JSON"),
])
def test_malformed_manifest_signed_by_a_trusted_key(signed: Path, key: Ed25519PrivateKey, data: bytes,
                                                    message: str) -> None:
    resign_raw(signed, data, key)
    with pytest.raises(SignatureError, match=f"manifest malformed: {message}"):
        verify_directory(signed, [key.public_key()])


def _drop_field(m: dict) -> None:
    del m["signer"]


def _unsorted(m: dict) -> None:
    m["files"].reverse()


def _duplicate(m: dict) -> None:
    m["files"].insert(0, m["files"][0])


def _escape(m: dict) -> None:
    m["files"][0]["path"] = "../outside"


def _absolute(m: dict) -> None:
    m["files"][0]["path"] = "/etc/passwd"


def _bad_sha(m: dict) -> None:
    m["files"][0]["sha256"] = "ABC"


def _bool_size(m: dict) -> None:
    m["files"][0]["size"] = True


@pytest.mark.parametrize("edit, message", [
    (_drop_field, r"missing fields \['signer'\]"),
    (lambda m: m.update(format="zip"), "format is 'zip'"),
    (lambda m: m.update(version=2), "version 2"),
    (lambda m: m.update(created="yesterday"), "created"),
    (lambda m: m.update(files={}), "files is not a list"),
    (_unsorted, "not sorted"),
    (_duplicate, "not sorted"),
    (_escape, "invalid path '../outside'"),
    (_absolute, "invalid path '/etc/passwd'"),
    (_bad_sha, "sha256"),
    (_bool_size, "size"),
    (lambda m: m.update(key_fingerprint="ed25519:0000000000000000"), "names key ed25519:0000000000000000 but"),
], ids=["missing-field", "format", "version", "created", "files-type", "unsorted", "duplicate", "dotdot",
        "absolute", "sha256", "size", "fingerprint-mismatch"])
def test_malformed_fields_signed_by_a_trusted_key(signed: Path, key: Ed25519PrivateKey, edit, message: str) -> None:
    manifest = manifest_of(signed)
    edit(manifest)
    resign_raw(signed, canonical(manifest), key)
    with pytest.raises(SignatureError, match=f"manifest malformed: .*{message}"):
        verify_directory(signed, [key.public_key()])


# -------------------------------------------------------------------------------- links and kinds


def test_symlink_to_a_file_outside(tmp_path: Path, signed: Path, key: Ed25519PrivateKey) -> None:
    (tmp_path / "outside.txt").write_bytes(b"secret")
    (signed / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(SignatureError, match=r"symlink: link\.txt"):
        verify_directory(signed, [key.public_key()])


def test_signed_file_replaced_by_a_symlink_to_the_same_bytes(tmp_path: Path, signed: Path,
                                                             key: Ed25519PrivateKey) -> None:
    shutil.copy(signed / "config.json", tmp_path / "copy.json")
    (signed / "config.json").unlink()
    (signed / "config.json").symlink_to(tmp_path / "copy.json")
    with pytest.raises(SignatureError, match=r"symlink: config\.json"):
        verify_directory(signed, [key.public_key()])


def test_symlinked_directory_is_not_followed(tmp_path: Path, signed: Path, key: Ed25519PrivateKey) -> None:
    outside = make_model_dir(tmp_path / "outside", {"x.bin": b"x"})
    (signed / "sub" / "more").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SignatureError, match="symlink: sub/more"):
        verify_directory(signed, [key.public_key()])


@pytest.mark.parametrize("name", [MANIFEST_NAME, SIGNATURE_NAME])
def test_manifest_or_signature_as_a_symlink(tmp_path: Path, signed: Path, key: Ed25519PrivateKey, name: str) -> None:
    shutil.move(signed / name, tmp_path / name)
    (signed / name).symlink_to(tmp_path / name)
    with pytest.raises(SignatureError, match=f"symlink: {name}"):
        verify_directory(signed, [key.public_key()])


def test_sign_refuses_symlinks(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    model = make_model_dir(tmp_path / "m")
    (tmp_path / "outside").write_bytes(b"o")
    (model / "sub" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(SignatureError, match="symlink: sub/link"):
        sign_directory(model, key)
    assert not (model / MANIFEST_NAME).exists() and not (model / SIGNATURE_NAME).exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_special_files_are_refused(signed: Path, key: Ed25519PrivateKey) -> None:
    os.mkfifo(signed / "pipe")
    with pytest.raises(SignatureError, match="not a regular file: pipe"):
        verify_directory(signed, [key.public_key()])
    with pytest.raises(SignatureError, match="not a regular file: pipe"):
        sign_directory(signed, key)


def test_non_utf8_file_name_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    model = make_model_dir(tmp_path / "m")
    # Linux file systems take any bytes in a name (this project runs on Linux)
    fd = os.open(os.fsencode(model) + b"/\xff.bin", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    with pytest.raises(SignatureError, match="not UTF-8"):
        sign_directory(model, key)


# ----------------------------------------------------------------------------------------- trust


@pytest.mark.parametrize("trusted", [None, []])
def test_trusted_keys_are_required(signed: Path, trusted) -> None:
    with pytest.raises(ValueError, match="trusted"):
        verify_directory(signed, trusted)


def test_missing_directory(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(FileNotFoundError):
        verify_directory(tmp_path / "nope", [key.public_key()])
    with pytest.raises(FileNotFoundError):
        sign_directory(tmp_path / "nope", key)


def test_trusted_given_as_files_and_text(tmp_path: Path, signed: Path, key: Ed25519PrivateKey,
                                         other_key: Ed25519PrivateKey) -> None:
    ssh = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    other = other_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    trusted_file = tmp_path / "trusted_keys"
    trusted_file.write_bytes(b"# the release keys\n" + other + b" old\n\n" + ssh + b" current\n")
    assert len(load_public_keys(trusted_file)) == 2
    for trusted in (trusted_file, str(trusted_file), [trusted_file], [ssh], [ssh.decode()]):
        assert verify_directory(signed, trusted).fingerprint == key_fingerprint(key)


# ------------------------------------------------------------------------------------------- keys


def test_generate_keypair(tmp_path: Path) -> None:
    private_path, public_path = generate_keypair(tmp_path / "release", comment="release key")
    assert public_path == tmp_path / "release.pub"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    line = public_path.read_text()
    assert line.startswith("ssh-ed25519 AAAA") and line.endswith(" release key\n") and line.count("\n") == 1
    private = load_private_key(private_path)
    assert key_fingerprint(private) == key_fingerprint(load_public_key(public_path))
    assert not is_encrypted_private_key(private_path)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_private_key_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        private_path, _ = generate_keypair(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600


def test_refuses_to_overwrite_a_private_key(tmp_path: Path) -> None:
    private_path, public_path = generate_keypair(tmp_path / "k")
    before = private_path.read_bytes(), public_path.read_bytes()
    with pytest.raises(FileExistsError, match=str(private_path)):
        generate_keypair(private_path, tmp_path / "elsewhere.pub")
    public_path.unlink()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_keypair(private_path)
    assert private_path.read_bytes() == before[0]
    with pytest.raises(FileExistsError, match=f"{tmp_path / 'k'}: .* new public key"):
        generate_keypair(tmp_path / "k2", tmp_path / "k")  # an existing file at the public path too
    assert not (tmp_path / "k2").exists()


def test_passphrase_round_trip(tmp_path: Path, signed: Path) -> None:
    private_path, public_path = generate_keypair(tmp_path / "k", passphrase=b"correct horse")
    assert private_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert is_encrypted_private_key(private_path)
    private = load_private_key(private_path, passphrase="correct horse")  # str is UTF-8 encoded
    sign_directory(signed, private)
    assert verify_directory(signed, [public_path]).fingerprint == key_fingerprint(private)


def test_wrong_or_missing_passphrase(tmp_path: Path) -> None:
    private_path, _ = generate_keypair(tmp_path / "k", passphrase=b"correct horse")
    with pytest.raises(SignatureError, match="wrong passphrase"):
        load_private_key(private_path, passphrase=b"battery staple")
    with pytest.raises(SignatureError, match="encrypted; give its passphrase"):
        load_private_key(private_path)
    plain, _ = generate_keypair(tmp_path / "plain")
    with pytest.raises(SignatureError, match="not encrypted, but a passphrase was given"):
        load_private_key(plain, passphrase=b"x")
    with pytest.raises(ValueError, match="empty passphrase"):
        generate_keypair(tmp_path / "k3", passphrase=b"")
    with pytest.raises(ValueError, match="at least 8 characters"):
        generate_keypair(tmp_path / "k3", passphrase="short")
    assert not (tmp_path / "k3").exists()


def test_openssh_private_key_is_accepted(tmp_path: Path, signed: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "id_ed25519"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    assert key_fingerprint(load_private_key(path)) == key_fingerprint(key)
    assert not is_encrypted_private_key(path)


def test_key_files_of_the_wrong_kind(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    ed448 = Ed448PrivateKey.generate()
    (tmp_path / "ed448.pem").write_bytes(ed448.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(SignatureError, match="not an Ed25519 public key"):
        load_public_key(tmp_path / "ed448.pem")
    (tmp_path / "ed448.key").write_bytes(ed448.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(SignatureError, match="not an Ed25519 private key"):
        load_private_key(tmp_path / "ed448.key")
    private_path, _ = generate_keypair(tmp_path / "k")
    with pytest.raises(SignatureError, match="a private key where a public key was expected"):
        load_public_key(private_path)
    (tmp_path / "junk").write_bytes(b"hello")
    with pytest.raises(SignatureError, match="not a PEM"):
        load_private_key(tmp_path / "junk")
    with pytest.raises(SignatureError, match="not an OpenSSH or PEM public key"):
        load_public_key(tmp_path / "junk")
    with pytest.raises(FileNotFoundError):
        load_public_key(tmp_path / "absent.pub")


def test_fingerprints_are_stable(tmp_path: Path) -> None:
    raw = FIXED_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    expected = "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]
    assert expected == "ed25519:56475aa75463474c"  # pinned: the fingerprint of a key never changes
    public = FIXED_KEY.public_key()
    ssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "k.pub").write_bytes(ssh + b" a comment\n")
    for form in (FIXED_KEY, public, ssh, ssh.decode(), pem, pem.decode(), tmp_path / "k.pub"):
        assert key_fingerprint(load_public_key(form)) == expected


def test_messages_hold_no_key_material(tmp_path: Path, signed: Path, key: Ed25519PrivateKey,
                                       other_key: Ed25519PrivateKey) -> None:
    private_path, public_path = generate_keypair(tmp_path / "k", passphrase=b"pw-secret")
    secrets = [base64.b64encode(k.public_key().public_bytes(serialization.Encoding.Raw,
                                                            serialization.PublicFormat.Raw)).decode()[:20]
               for k in (key, other_key)]
    secrets += [public_path.read_text().split()[1][20:60], private_path.read_text().splitlines()[1][:40], "pw-secret"]
    messages = []
    for action in (lambda: load_private_key(private_path, passphrase=b"nope"),
                   lambda: verify_directory(signed, [other_key.public_key()]),
                   lambda: verify_directory(signed, [public_path])):
        with pytest.raises(SignatureError) as info:
            action()
        messages.append(str(info.value))
    for message in messages:
        assert not any(secret in message for secret in secrets), message


# ------------------------------------------------------------------------------------- property


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey) -> Path:
    model = make_model_dir(tmp_path_factory.mktemp("property") / "model")
    sign_directory(model, key)
    return model


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(sorted(FILES) + [MANIFEST_NAME, SIGNATURE_NAME]),
       position=st.integers(min_value=0, max_value=1 << 20), mask=st.integers(min_value=1, max_value=255))
def test_any_single_byte_flip_is_caught(pristine: Path, key: Ed25519PrivateKey, which: str, position: int,
                                        mask: int) -> None:
    path = pristine / which
    original = path.read_bytes()
    altered = bytearray(original)
    altered[position % len(altered)] ^= mask
    path.write_bytes(bytes(altered))
    try:
        with pytest.raises(SignatureError):
            verify_directory(pristine, [key.public_key()])
    finally:
        path.write_bytes(original)
    verify_directory(pristine, [key.public_key()])
