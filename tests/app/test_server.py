"""The web app's HTTP endpoints, over a real socket: what they answer, and the clear 4xx messages
for uploads that are too large, of the wrong type, or incomplete."""
import base64
import importlib.util
import io
import json
import re
import socket
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

from groundkit.app.server import EXAMPLES, Limits, bind, create_app, find_models, url_of
from groundkit.cli import build_parser, main
from groundkit.engine.tasks import FAMILIES
from groundkit.ops.masks import decode_rle

SYNTHETIC = EXAMPLES / "synthetic-2000001.png"
COCO = EXAMPLES / "coco-142238.jpg"
CAPTION = "This is a picture of [the grass]. We can also see [a large yellow ring]."


@pytest.fixture(scope="module")
def models(tiny_pbrec_checkpoint):
    found, problems = find_models([tiny_pbrec_checkpoint])
    assert not problems
    return found


@pytest.fixture(scope="module")
def url(models, serving):
    with serving(create_app(models, device="cpu")) as address:
        yield address


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            return r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


def post(url, fields=None, files=None):
    """A multipart/form-data POST: ``fields`` {name: text}, ``files`` {name: (filename, bytes)};
    returns (status, parsed JSON)."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in (fields or {}).items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                 f'{value}\r\n').encode()
    for name, (filename, data) in (files or {}).items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 ).encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "api/predict", data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def predict(url, image_path, model, text=None):
    fields = {"model": model} if text is None else {"model": model, "text": text}
    return post(url, fields, {"image": (image_path.name, image_path.read_bytes())})


def picture(data_url):
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def image_bytes(h, w, format="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)).save(
        buffer, format=format)
    return buffer.getvalue()


# --- what it answers ---------------------------------------------------------------------------

def test_info_lists_families_models_limits_and_examples(url, tiny_pbrec_checkpoint):
    status, kind, body = get(url + "api/info")
    info = json.loads(body)
    assert status == 200 and kind.startswith("application/json")
    assert [f["name"] for f in info["families"]] == list(FAMILIES)
    by_name = {f["name"]: f for f in info["families"]}
    assert by_name["grounding"]["text"] == "caption" and by_name["panoptic"]["text"] is None
    models = {m["name"]: m for m in info["models"]}
    assert models["ppmn-synthetic"]["family"] == "grounding"
    assert models["ppmn-synthetic"]["source"] == "bundled"
    assert "synthetic" in models["ppmn-synthetic"]["trained_on"]
    assert models["panoptic-synthetic"]["family"] == "panoptic"
    local = models[str(tiny_pbrec_checkpoint)]
    assert local["family"] == "referring" and local["source"] == "local"
    names = [m["name"] for m in info["models"]]
    assert names.index("ppmn-synthetic") < names.index("drmn-synthetic")  # the default first
    assert names[-1] == str(tiny_pbrec_checkpoint)                       # local after bundled
    assert "synthetic benchmark" in info["bundled_note"]
    assert info["limits"]["max_bytes"] == Limits().max_bytes
    assert len(info["examples"]) == 5 and {"synthetic", "COCO"} <= {
        e["title"].split()[0] for e in info["examples"]}
    for example in info["examples"]:
        assert example["texts"]["grounding"].count("[") >= 2
        status, kind, body = get(url + example["url"].lstrip("/"))
        assert status == 200 and kind.startswith("image/") and Image.open(io.BytesIO(body)).size


def test_the_page_loads_nothing_from_elsewhere(url):
    status, kind, body = get(url)
    page = body.decode()
    assert status == 200 and kind.startswith("text/html") and "<title>groundkit</title>" in page
    assert "http:" not in page and "https:" not in page and "//cdn" not in page
    assert not re.findall(r'(?:src|href)="(?!data:|/|#)', page)
    assert get(url + "docs")[0] == 404  # FastAPI's docs page loads its scripts from a CDN: off


def test_grounding_gives_the_overlay_each_phrase_and_the_result_json(url):
    status, out = predict(url, SYNTHETIC, "ppmn-synthetic", CAPTION)
    assert status == 200, out
    assert out["family"] == "grounding" and out["model"] == "ppmn-synthetic"
    assert (out["width"], out["height"]) == (128, 128) and out["seconds"] > 0
    assert out["text"] == "This is a picture of the grass. We can also see a large yellow ring."
    assert picture(out["overlay"]).width >= 384  # as `groundkit predict` draws it
    assert [r["label"] for r in out["regions"]] == ["the grass", "a large yellow ring"]
    phrases = out["result"]["phrases"]
    assert [p["utterance"] for p in phrases] == ["the grass", "a large yellow ring"]
    for region, phrase in zip(out["regions"], phrases):
        mask = decode_rle(phrase["mask"])
        assert mask.shape == (128, 128) and region["area"] == int(mask.sum())
        assert region["score"] == pytest.approx(phrase["score"])
        assert out["text"][slice(*region["span"])] == region["label"]
        layer = np.asarray(picture(region["layer"]))
        assert layer.shape == (128, 128, 4)
        assert ((layer[..., 3] > 0) == mask).all()  # the layer is the phrase's mask
        if region["area"]:
            x, y = region["point"]
            assert mask[y, x]
    assert out["regions"][0]["colour"] != out["regions"][1]["colour"]


def test_panoptic_gives_each_segment_a_label_inside_it(url):
    status, out = predict(url, COCO, "panoptic-synthetic")
    assert status == 200, out
    assert (out["width"], out["height"]) == (512, 342) and out["text"] is None
    segments = out["result"]["segments_info"]
    assert segments and [s["category"] for s in segments] == [r["label"] for r in out["regions"]]
    for region, segment in zip(out["regions"], segments):
        assert region["area"] == segment["area"]
        x, y = region["point"]
        assert np.asarray(picture(region["layer"]))[y, x, 3] > 0


def test_referring_with_a_local_checkpoint(url, tiny_pbrec_checkpoint):
    status, out = predict(url, SYNTHETIC, str(tiny_pbrec_checkpoint), "the yellow ring")
    assert status == 200, out
    assert out["family"] == "referring" and out["text"] == "the yellow ring"
    (region,) = out["regions"]
    assert region["label"] == "the yellow ring" and region["span"] == [0, 15]
    assert len(out["result"]["box"]) == 4 and "score" in out["result"]


# --- what it refuses -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def strict_url(models, serving):
    """A server with small limits: 40 kB files and 10,000 pixels."""
    with serving(create_app(models, Limits(max_bytes=40_000, max_pixels=10_000),
                            device="cpu")) as address:
        yield address


def test_an_upload_too_large_is_413_with_the_limit(strict_url):
    # announced by its length, the whole body is refused before it is parsed
    status, out = post(strict_url, {"model": "panoptic-synthetic"},
                       {"image": ("big.png", image_bytes(200, 200))})
    assert status == 413 and re.fullmatch(r"the upload is 1\d\d kB: images up to 39.1 kB are "
                                          r"accepted", out["error"]), out
    # a little over: the file itself is measured
    status, out = post(strict_url, {"model": "panoptic-synthetic"},
                       {"image": ("scene.png", b"\x89PNG" + bytes(50_000))})
    assert status == 413
    assert out["error"] == "scene.png is too large: images up to 39.1 kB are accepted"


def test_an_image_with_too_many_pixels_is_413(strict_url):
    status, out = post(strict_url, {"model": "panoptic-synthetic"},
                       {"image": ("wide.png", image_bytes(20, 600))})
    assert status == 413
    assert out["error"] == "wide.png is 600 x 20 pixels: images up to 10,000 pixels are accepted"


@pytest.mark.parametrize("filename, data, message", [
    ("notes.txt", b"these are not pixels", "notes.txt is not an image groundkit reads: choose a "
                                           "PNG, JPEG, WebP or BMP image"),
    ("cat.gif", "GIF", "cat.gif is a GIF image: choose a PNG, JPEG, WebP or BMP image"),
    ("cut.png", "cut", "cut.png could not be decoded (truncated or damaged)"),
    ("empty.png", b"", "empty.png is empty"),
])
def test_a_file_that_is_no_accepted_image_is_refused_with_what_to_send(url, filename, data,
                                                                        message):
    if isinstance(data, str):  # a GIF, or the first 300 bytes of a PNG
        data = image_bytes(64, 64, "GIF") if data == "GIF" else image_bytes(64, 64)[:300]
    status, out = post(url, {"model": "panoptic-synthetic"}, {"image": (filename, data)})
    assert status == (400 if not data else 415)
    assert out["error"].startswith(message)


def test_incomplete_requests_are_4xx_that_say_what_is_missing(url):
    status, out = predict(url, SYNTHETIC, "ppmn-synthetic", "  ")
    assert status == 400 and out["error"] == "type a caption first"
    status, out = predict(url, SYNTHETIC, "no-such-model", CAPTION)
    assert status == 404 and out["error"].startswith("no model 'no-such-model' here")
    status, out = post(url, {"model": "ppmn-synthetic", "text": CAPTION})
    assert status == 422 and out["error"].startswith("the form lacks image")
    if importlib.util.find_spec("spacy") is None:  # no brackets, no noun chunker: say what to do
        status, out = predict(url, SYNTHETIC, "ppmn-synthetic", "a ring under the sky")
        assert status == 400 and "brackets" in out["error"]
    status, _, body = get(url + "examples/server.py")  # only the listed examples are served
    assert status == 404 and json.loads(body) == {"error": "no example image 'server.py'"}


# --- where it listens, what it offers ----------------------------------------------------------

def test_it_listens_on_127_0_0_1_unless_told_otherwise():
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 7860
    sock = bind(port=0)
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0 and url_of(sock) == f"http://127.0.0.1:{port}/"
    finally:
        sock.close()


def test_the_printed_address_takes_connections_before_the_server_runs():
    """The address is printed before uvicorn starts; a browser opening it at once must wait in
    the backlog, not be refused (the browser test saw ERR_CONNECTION_REFUSED on a busy CPU)."""
    sock = bind(port=0)
    try:
        with socket.create_connection(sock.getsockname()[:2], timeout=5):
            pass  # connect() returns once the kernel queued it: nothing accept()ed it yet
    finally:
        sock.close()


def test_local_checkpoints_are_found_in_folders_and_bad_ones_reported(tmp_path,
                                                                      tiny_pbrec_checkpoint):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"not a checkpoint")
    (tmp_path / "notes").mkdir()
    models, problems = find_models(folders=[tiny_pbrec_checkpoint.parent, tmp_path,
                                            tmp_path / "missing"])
    local = [m for m in models if m.source == "local"]
    assert [(m.name, m.family) for m in local] == [(str(tiny_pbrec_checkpoint), "referring")]
    assert "pbrec, trained on" in local[0].trained_on
    assert len(problems) == 2 and problems[0] == f"{tmp_path / 'missing'}: no such folder"
    assert problems[1].startswith(f"{tmp_path / 'broken'}: ")


def test_serve_without_the_demo_extra_says_what_to_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve"]) == 2
    assert "pip install 'groundkit[demo]'" in capsys.readouterr().err
