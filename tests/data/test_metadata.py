"""Clean metadata in the data layer: uploads lose EXIF/GPS/XMP/ICC/text chunks, the PNGs Atelier writes hold
pixels and at most the allowlisted provenance record, GIFs and JPEGs hold no comment or EXIF, and the names
uploads give never become paths."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image, PngImagePlugin

from atelier.data import provenance as prov_module
from atelier.data.base import DataError
from atelier.data.images import (TooManyPixels, clean_upload, decode_image, png_bytes, read_image_bytes, safe_stem,
                                 save_image, strict_pil)
from atelier.data.provenance import (ALLOWED_KEYS, PROVENANCE_KEY, Provenance, ProvenanceError, png_chunks,
                                     read_provenance, text_problem, weights_sha256)
from atelier.report.gif import gif_bytes
from atelier.report.grid import grid_png, save_grid

SECRET = "SECRET-b7f3e1"
XMP_MARKER = b"http://ns.adobe.com/xap/1.0/"
PIXEL_CHUNKS = {"IHDR", "IDAT", "IEND"}
SHA = "0123456789abcdef" * 4


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    exif[0x013B] = f"{SECRET}-artist"  # Artist
    exif[0x010E] = f"{SECRET}-description"  # ImageDescription
    gps = exif.get_ifd(0x8825)  # the GPS IFD
    gps.update({1: "N", 2: (51.0, 30.0, 12.0), 3: "W", 4: (0.0, 7.0, 39.0)})
    return exif


def _xmp() -> bytes:
    return (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="' + SECRET.encode()
            + b'-xmp"/></rdf:RDF></x:xmpmeta>')


def _pixels(h: int = 24, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    pixels[:, : w // 2] = 255  # a white left half: the orientation is visible
    return pixels


def tagged_jpeg() -> bytes:
    """A JPEG carrying EXIF (orientation, artist, GPS), an XMP packet, a comment and an ICC profile."""
    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(buf, format="JPEG", quality=95, exif=_exif(), xmp=_xmp(),
                                    comment=f"{SECRET}-comment".encode(), icc_profile=f"{SECRET}-icc".encode() * 8)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:  # the fixture really carries what the tests say it does
        assert {"exif", "xmp", "comment", "icc_profile"} <= set(im.info)
        assert im.getexif().get_ifd(0x8825)[1] == "N"
    assert SECRET.encode() in data and XMP_MARKER in data and b"Exif\x00\x00" in data
    return data


def tagged_png() -> bytes:
    """An RGB PNG carrying tEXt, iTXt (with XMP), zTXt, eXIf and iCCP chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", f"{SECRET}-text")
    info.add_itxt("Author", f"{SECRET}-itxt", lang="en", tkey="Author")
    info.add_text("Software", f"{SECRET}-ztxt", zip=True)
    info.add_itxt("XML:com.adobe.xmp", _xmp().decode())
    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(buf, format="PNG", pnginfo=info, exif=_exif(), icc_profile=b"not a profile" * 4)
    data = buf.getvalue()
    kinds = {kind for kind, _ in png_chunks(data)}
    assert {"tEXt", "iTXt", "zTXt", "eXIf", "iCCP"} <= kinds
    return data


def assert_pixels_only(data: bytes) -> None:
    """A PNG of pixels alone: no chunk but IHDR/IDAT/IEND, no secret, no EXIF, XMP or ICC marker."""
    assert {kind for kind, _ in png_chunks(data)} <= PIXEL_CHUNKS
    for marker in (SECRET.encode(), XMP_MARKER, b"Exif", b"ICC_PROFILE", b"GPS"):
        assert marker not in data
    with Image.open(io.BytesIO(data)) as im:
        assert not {"exif", "xmp", "icc_profile", "comment", "XML:com.adobe.xmp"} & set(im.info)
        assert len(im.getexif()) == 0


def jpeg_markers(data: bytes) -> list[int]:
    """The JPEG segment markers before the scan (0xE0..0xEF are APPn, 0xFE a comment)."""
    assert data[:2] == b"\xff\xd8"
    at, markers = 2, []
    while at < len(data):
        assert data[at] == 0xFF
        marker = data[at + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: the pixels follow
            break
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        at += 2 + length
    return markers


def gif_blocks(data: bytes) -> list[str]:
    """A GIF's blocks in order: "image", "ext:<label hex>" (application blocks with their identifier)."""
    assert data[:6] in (b"GIF87a", b"GIF89a")
    packed = data[10]
    at = 13 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)

    def skip_sub_blocks(at: int) -> int:
        while data[at]:
            at += 1 + data[at]
        return at + 1

    blocks = []
    while data[at] != 0x3B:
        if data[at] == 0x21:
            label = data[at + 1]
            name = f"ext:{label:02x}"
            if label == 0xFF:
                name += ":" + data[at + 3:at + 3 + data[at + 2]].decode("latin-1")
            blocks.append(name)
            at = skip_sub_blocks(at + 2)
        else:
            assert data[at] == 0x2C
            packed = data[at + 9]
            at += 10 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
            blocks.append("image")
            at = skip_sub_blocks(at + 1)  # after the LZW minimum code size
    return blocks


# -- uploads --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [tagged_jpeg, tagged_png], ids=["jpeg", "png"])
def test_clean_upload_keeps_the_pixels_and_nothing_else(make) -> None:
    data = make()
    clean = clean_upload(data)
    assert_pixels_only(clean)
    # the decoders see the same picture either way: orientation applied once, not again
    assert torch.equal(read_image_bytes(clean), read_image_bytes(data))
    with strict_pil():
        assert np.array_equal(decode_image(io.BytesIO(clean), 16), decode_image(io.BytesIO(data), 16))


def test_clean_upload_applies_the_orientation_before_dropping_it() -> None:
    clean = clean_upload(tagged_jpeg())
    with Image.open(io.BytesIO(clean)) as im:
        assert im.size == (24, 40)  # stored 40 wide x 24 high, rotated by the EXIF orientation
        top = np.asarray(im.convert("L"))[: 20].mean()
        bottom = np.asarray(im.convert("L"))[20:].mean()
    assert top > 240 > bottom  # the white left half is on top after a clockwise turn


def test_clean_upload_of_a_png_is_lossless_and_max_side_shrinks_as_the_reader_does() -> None:
    data = tagged_png()
    with Image.open(io.BytesIO(clean_upload(data))) as im:
        assert np.array_equal(np.asarray(im), np.rot90(_pixels(), -1))  # its eXIf chunk's orientation, applied
    small = clean_upload(data, max_side=10)
    with Image.open(io.BytesIO(small)) as im:
        assert im.size == (6, 10)
    assert torch.equal(read_image_bytes(small), read_image_bytes(data, size=10))


def test_clean_upload_refuses_what_is_not_an_image_or_is_too_large() -> None:
    with pytest.raises(DataError, match="the avatar: not a readable image"):
        clean_upload(b"GIF89a not really", name="the avatar")
    buf = io.BytesIO()
    Image.new("L", (300, 200)).save(buf, format="PNG")
    with pytest.raises(TooManyPixels, match="over the limit of 1,000"):
        clean_upload(buf.getvalue(), max_pixels=1000)


def test_transparency_is_composited_as_the_decoders_do() -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:4, ..., 3] = 255  # top half opaque red, bottom half transparent
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    clean = clean_upload(buf.getvalue())
    assert_pixels_only(clean)
    assert torch.equal(read_image_bytes(clean), read_image_bytes(buf.getvalue()))


@pytest.mark.parametrize("name, stem", [
    ("../../evil.png", "evil"), ("/abs/x.png", "x"), ("C:\\x.png", "x"), ("C:x.png", "x"), ("..", ""),
    ("dir\\..\\..\\up.jpg", "up"), (".hidden.png", "hidden"), ("a b?.png", "a_b"), ("Café.JPG", "Cafe"),
    ("фото.jpg", ""), ("x" * 300 + ".png", "x" * 64), ("", ""),
])
def test_safe_stem_never_leaves_a_path(name, stem) -> None:
    assert safe_stem(name) == stem


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_safe_stem_of_any_name_is_a_plain_short_name(name) -> None:
    stem = safe_stem(name)
    assert len(stem) <= 64 and not stem.startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in stem)


# -- what Atelier writes ----------------------------------------------------------------------------------


def _image(c: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (c, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_pngs_without_provenance_carry_no_text_chunk(tmp_path) -> None:
    batch = torch.stack([_image(), _image()])
    written = [png_bytes(_image(1)), png_bytes(_image(), scale=3), grid_png(batch),
               save_image(_image(), tmp_path / "a.png").read_bytes(), save_grid(batch, tmp_path / "g.png").read_bytes()]
    for data in written:
        assert [kind for kind, _ in png_chunks(data)][0] == "IHDR"
        assert {kind for kind, _ in png_chunks(data)} <= PIXEL_CHUNKS
        assert read_provenance(data) is None


def test_a_png_with_provenance_carries_exactly_the_record(tmp_path) -> None:
    made = Provenance(operation="sample", model_family="dcgan", model_name="gan-run", weights_sha256=SHA, seed=7,
                      n=16, truncation=0.7)
    expected = {"operation", "model_family", "model_name", "weights_sha256", "seed", "n", "truncation", "software",
                "version"}
    batch = torch.stack([_image(), _image()])
    for data in (png_bytes(_image(), provenance=made), grid_png(batch, provenance=made),
                 save_grid(batch, tmp_path / "g.png", provenance=made).read_bytes()):
        kinds = [kind for kind, _ in png_chunks(data)]
        assert kinds.count("tEXt") == 1 and set(kinds) <= PIXEL_CHUNKS | {"tEXt"}
        assert kinds.index("tEXt") < kinds.index("IDAT")
        record = read_provenance(data)
        assert set(record) == expected and record["seed"] == 7 and record["weights_sha256"] == SHA
        assert record["software"] == "atelier" and record["truncation"] == 0.7
    path = save_image(_image(), tmp_path / "one.png", provenance=made.replace(index=3, label=2))
    assert read_provenance(path) == made.replace(index=3, label=2).record()
    with Image.open(path) as im:  # any PNG reader sees the record under its keyword
        assert json.loads(im.info[PROVENANCE_KEY])["index"] == 3


def test_read_provenance_refuses_a_malformed_record() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(PROVENANCE_KEY, "{not json")
    buf = io.BytesIO()
    Image.new("L", (2, 2)).save(buf, format="PNG", pnginfo=info)
    with pytest.raises(DataError, match="not JSON"):
        read_provenance(buf.getvalue())
    with pytest.raises(DataError, match="not a PNG"):
        read_provenance(b"GIF89a")


def test_gifs_and_jpegs_carry_no_comment_exif_or_xmp(tmp_path) -> None:
    from atelier.cli.style import _save_rgb

    frames = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    blocks = gif_blocks(gif_bytes(frames))
    # frames, their timing (graphic control) and the loop count (the NETSCAPE2.0 application block) alone:
    # no comment, no plain text, no XMP or any other application block
    assert {b for b in blocks if b.startswith("ext")} == {"ext:f9", "ext:ff:NETSCAPE2.0"}
    assert blocks.count("image") == 4 + 2  # boomerang: 0 1 2 3 2 1
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    for suffix in (".jpg", ".webp", ".png"):
        data = _save_rgb(image, tmp_path / f"out{suffix}").read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            assert not {"comment", "xmp", "exif", "icc_profile"} & set(im.info) and len(im.getexif()) == 0
        if suffix == ".jpg":  # JFIF (APP0) alone: no EXIF/XMP (APP1), ICC (APP2) or comment segment
            assert not {0xE1, 0xE2, 0xED, 0xFE} & set(jpeg_markers(data))


# -- the allowlist -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, why", [
    ("/home/alice/runs/gan", "path"), ("runs\\gan", "path"), ("~/runs", "path"), ("C:runs", "path"),
    ("atl_0123456789ab_" + "x" * 43, "token"), ("alice@example.com", "e-mail"), ("x" * 129, "longer"),
    ("a\nb", "control"), ("Zm9vYmFyYmF6cXV4cXV1eGZvb2JhcmJhenF1eA", "key or token"),
])
def test_values_that_look_like_paths_tokens_or_emails_are_refused(value, why) -> None:
    assert why in text_problem(value)
    with pytest.raises(ProvenanceError, match="model_name"):
        Provenance(model_name=value)
    assert "model_name" not in Provenance.from_mapping({"model_name": value, "seed": 1}).record()


def test_the_login_name_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(prov_module, "_login_name", lambda: "alice")
    assert "login name" in text_problem("Alice")
    assert Provenance.from_mapping({"model_name": "alice"}).model_name is None
    assert Provenance.from_mapping({"model_name": "alice-gan"}).model_name == "alice-gan"


def test_unknown_keys_are_dropped_and_types_are_checked() -> None:
    kept = Provenance.from_mapping({"seed": 3, "user": "bob", "token": "t", "path": "p", "principal": "bob",
                                    "label": True, "truncation": float("nan"), "n": 2.0, "steps": 10,
                                    "weights_sha256": "abc", "guidance": 3}).record()
    assert set(kept) == {"seed", "steps", "guidance", "software", "version"} and kept["guidance"] == 3.0
    with pytest.raises(TypeError):
        Provenance(user="bob")  # type: ignore[call-arg]
    for bad in ({"seed": True}, {"seed": "1"}, {"truncation": float("inf")}, {"weights_sha256": SHA.upper()},
                {"seed": 2**64}):
        with pytest.raises(ProvenanceError):
            Provenance(**bad)


_DANGER = st.one_of(
    st.builds(lambda a, b: a + "/" + b, st.text(max_size=10), st.text(max_size=10)),
    st.builds(lambda a, b: a + "\\" + b, st.text(max_size=10), st.text(max_size=10)),
    st.builds(lambda a, b: a + "atl_" + b, st.text(max_size=10), st.text(max_size=10)),
    st.builds(lambda a: "~" + a, st.text(max_size=10)),
    st.builds(lambda u, d: f"{u}@{d}.org", st.from_regex(r"[a-z]{1,8}", fullmatch=True),
              st.from_regex(r"[a-z]{1,8}", fullmatch=True)),
)
_STRING_KEYS = sorted(k for k in ALLOWED_KEYS if prov_module._FIELDS[k] is str and k != "weights_sha256")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_STRING_KEYS), _DANGER, min_size=1),
       st.dictionaries(st.text(max_size=12), st.one_of(st.integers(), st.text(max_size=20), st.floats()), max_size=6))
def test_property_no_dangerous_value_and_no_unknown_key_is_ever_written(dangerous, anything) -> None:
    made = Provenance.from_mapping({**anything, **dangerous})
    record = made.record()
    assert set(record) <= ALLOWED_KEYS
    defaults = Provenance().record()
    for key in dangerous:  # dropped: absent, or the default for the two fields that have one
        assert record.get(key) == defaults.get(key)
    for value in record.values():
        if isinstance(value, str):
            assert text_problem(value) is None
            assert "/" not in value and "\\" not in value and "atl_" not in value.lower()
    assert read_provenance(png_bytes(torch.zeros(1, 2, 2, dtype=torch.uint8), provenance=made)) == record


def test_weights_sha256_of_a_model_folder(tmp_path) -> None:
    import hashlib

    assert weights_sha256(tmp_path) is None
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert weights_sha256(tmp_path) == hashlib.sha256(b"weights").hexdigest()
