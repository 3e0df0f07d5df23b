"""``groundkit serve``: the Python API behind one web page (FastAPI and uvicorn, nothing else).

Endpoints; every error is JSON ``{"error": message}`` with a 4xx status:

- ``GET /``: the page (``page.html``: no external script, style or font, so it works offline);
- ``GET /api/info``: the task families (title, the text each takes), the models (bundled and
  local, each with its family and what it was trained on), the upload limits and the examples;
- ``GET /examples/{file}``: an example image;
- ``POST /api/predict``: multipart ``image`` (PNG, JPEG, WebP or BMP), ``model`` (a name from
  ``/api/info``) and ``text`` (the caption or expression, for the families that take one).
  Returns the image size, the overlay picture, every region (label, score, colour, a transparent
  layer and where its label goes) and ``result``: what ``groundkit predict`` writes to
  ``result.json``.

Predictors load on first use and a few stay loaded. Predictions run one at a time: a predictor
holds its image's features between calls, and the CPU or GPU is busy anyway.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.exceptions import HTTPException

from groundkit import __version__
from groundkit.api import Predictor, predictor_class
from groundkit.engine.checkpoint import WEIGHTS_NAME, checkpoint_meta
from groundkit.engine.tasks import FAMILIES, get_task, task_of_checkpoint
from groundkit.errors import GroundkitError
from groundkit.hub import bundled_names, resolve_checkpoint
from groundkit.visualize import label_point, region_layer

HERE = Path(__file__).parent
EXAMPLES = HERE / "examples"
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp"}
ACCEPTED = "a PNG, JPEG, WebP or BMP image"
FORM_SLACK = 64 * 1024  # the multipart framing and text fields around the image
BUNDLED_NOTE = (
    "The bundled models were trained only on groundkit's synthetic benchmark: 128-pixel scenes of "
    "flat coloured shapes (circles, stars, rings, ...) over textured stuff (sky, grass, water, "
    "sand, wall, road, floor). They show the pipeline at work; on real photos, such as the two "
    "COCO examples, their masks mean little. To serve a model of your own, train it with "
    "groundkit train, then start groundkit serve --checkpoint FOLDER.")


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model picker."""

    name: str          # what the picker shows and the form sends back
    checkpoint: str    # what ``from_pretrained`` loads: a bundled name or a folder
    family: str
    source: str        # "bundled" or "local"
    trained_on: str    # one line for people


@dataclass(frozen=True)
class Limits:
    """What an upload may be."""

    max_bytes: int = 10 * 2**20
    max_pixels: int = 40_000_000


class RequestError(Exception):
    """A request the app refuses: ``status`` (4xx) and a message for the person who sent it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --- models ----------------------------------------------------------------------------------------

def find_models(checkpoints: Sequence[str | Path] = (), folders: Sequence[str | Path] = ()
                ) -> tuple[list[ModelChoice], list[str]]:
    """The bundled models, the ``checkpoints`` given, and every checkpoint folder (one holding
    ``model.safetensors``) that is or lies directly inside one of ``folders``.

    Returns the choices and, for each checkpoint that cannot be offered, why not.
    """
    found = [(name, "bundled") for name in bundled_names()]
    models, problems, names = [], [], set()
    for folder in map(Path, folders):
        if not folder.is_dir():
            problems.append(f"{folder}: no such folder")
            continue
        inside = [folder] if (folder / WEIGHTS_NAME).is_file() else sorted(folder.iterdir())
        found += [(str(p), "local") for p in inside if (p / WEIGHTS_NAME).is_file()]
    found += [(str(c), "local") for c in checkpoints]
    for checkpoint, source in found:
        if checkpoint in names:
            continue
        try:
            meta = checkpoint_meta(resolve_checkpoint(checkpoint))
            family = task_of_checkpoint(checkpoint).name
        except GroundkitError as e:
            problems.append(f"{checkpoint}: {e}")
            continue
        names.add(checkpoint)
        models.append(ModelChoice(checkpoint, checkpoint, family, source, training_note(meta)))
    # bundled first, each family's default (what `groundkit predict` takes) first among them
    models.sort(key=lambda m: (m.source != "bundled",
                               m.name != get_task(m.family).default_checkpoint))
    return models, problems


def training_note(meta: dict[str, Any]) -> str:
    """"ppmn, trained on data/synthetic-12k for 10 epochs; val ar 72.9" from a checkpoint's
    header (its experiment config and training metadata)."""
    config, state = meta.get("config") or {}, meta.get("meta") or {}
    data = config.get("data") or {}
    note = f"{meta.get('model_type', 'unknown model')}, trained on {data.get('root', 'unknown data')}"
    if data.get("max_items"):
        note += f" (its first {data['max_items']} items)"
    if state.get("epoch"):
        note += f" for {state['epoch']} epochs"
    metrics = {k: v for k, v in (state.get("metrics") or {}).items() if isinstance(v, (int, float))}
    if metrics:
        key = next(iter(metrics))
        note += f"; val {key} {100 * metrics[key]:.1f}"
    return note


class Predictors:
    """Predictors by model name, loaded on first use; the ``keep`` last used stay loaded."""

    def __init__(self, device: str | None = None, keep: int = 3) -> None:
        self.device, self.keep = device, keep
        self.lock = threading.Lock()  # held around every prediction
        self._loaded: OrderedDict[str, Predictor] = OrderedDict()

    def get(self, choice: ModelChoice) -> Predictor:
        if choice.name not in self._loaded:
            cls = predictor_class(choice.family)
            self._loaded[choice.name] = cls.from_pretrained(choice.checkpoint, device=self.device)
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(choice.name)
        return self._loaded[choice.name]


# --- uploads and answers -----------------------------------------------------------------------------

def size_text(n: int) -> str:
    """``n`` bytes for people: "10 MB", "2.5 MB", "39 kB"."""
    return f"{n / 2**20:.3g} MB" if n >= 2**20 else f"{n / 2**10:.3g} kB"


def pixels_text(n: int) -> str:
    """``n`` pixels for people: "40 megapixels", "10,000 pixels"."""
    return f"{n / 1e6:.3g} megapixels" if n >= 10**6 else f"{n:,} pixels"


def read_upload(data: bytes, filename: str, limits: Limits) -> np.ndarray:
    """The ``(H, W, 3) uint8`` image of an uploaded file, or a RequestError that says what is
    wrong with it (413: too large, 415: not an image of an accepted type)."""
    if len(data) > limits.max_bytes:
        raise RequestError(413, f"{filename} is too large: images up to "
                                f"{size_text(limits.max_bytes)} are accepted")
    if not data:
        raise RequestError(400, f"{filename} is empty: choose {ACCEPTED}")
    try:
        picture = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise RequestError(413, f"{filename} has too many pixels: images up to "
                                f"{pixels_text(limits.max_pixels)} are accepted") from None
    except (UnidentifiedImageError, OSError):
        raise RequestError(415, f"{filename} is not an image groundkit reads: "
                                f"choose {ACCEPTED}") from None
    if picture.format not in IMAGE_TYPES:
        raise RequestError(415, f"{filename} is a {picture.format} image: choose {ACCEPTED}")
    width, height = picture.size
    if width * height > limits.max_pixels:
        raise RequestError(413, f"{filename} is {width} x {height} pixels: images up to "
                                f"{pixels_text(limits.max_pixels)} are accepted")
    try:
        return np.asarray(ImageOps.exif_transpose(picture).convert("RGB"))
    except (OSError, ValueError, SyntaxError):
        raise RequestError(415, f"{filename} could not be decoded (truncated or damaged): "
                                f"choose {ACCEPTED}") from None


def data_url(picture: Image.Image) -> str:
    """``picture`` as a PNG ``data:`` URL, for an ``<img src>``."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render(predictor: Predictor, rgb: np.ndarray, result: Any) -> dict[str, Any]:
    """What the page shows of ``result``: the overlay, its regions one by one, its JSON."""
    height, width = rgb.shape[:2]
    regions = []
    for region in predictor.regions(result):
        if region.mask is not None:
            point, area = label_point(region.mask), int(region.mask.sum())
        else:  # a box-only referent: the label goes in the middle of its box
            x1, y1, x2, y2 = region.box
            point, area = (round((x1 + x2) / 2), round((y1 + y2) / 2)), None
        regions.append({
            "label": region.label, "score": region.score, "area": area,
            "colour": "#{:02x}{:02x}{:02x}".format(*region.colour),
            "span": None if region.span is None else list(region.span),
            "point": None if point is None else list(point),
            "layer": data_url(region_layer((height, width), region.colour, region.mask,
                                           region.box))})
    return {"width": width, "height": height, "text": predictor.text_of(result),
            # the page puts its own labels (which highlight) over the overlay: none baked in
            "overlay": data_url(predictor.draw(rgb, result, labels=False)), "regions": regions,
            "result": {"height": height, "width": width, **predictor.to_json(result)}}


def load_examples() -> list[dict[str, Any]]:
    """The example images and their texts per family (``examples/examples.json``)."""
    images = json.loads((EXAMPLES / "examples.json").read_text())["images"]
    return [{**item, "url": f"/examples/{item['file']}"} for item in images]


# --- the app ---------------------------------------------------------------------------------------

def create_app(models: Sequence[ModelChoice], limits: Limits = Limits(),
               device: str | None = None) -> FastAPI:
    """The web app over ``models``. Offline: its interactive API docs, which load their scripts
    from the internet, are off, and so is FastAPI's OpenTelemetry (which exports to an endpoint
    named by environment variables)."""
    app = FastAPI(title="groundkit", version=__version__, docs_url=None, redoc_url=None,
                  telemetry={"tracing": False, "metrics": False, "logs": False,
                             "auto_configure": False})
    by_name = {m.name: m for m in models}
    predictors = Predictors(device)
    examples = load_examples()
    page = (HERE / "page.html").read_text()

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(RequestError)
    def refused(request: Request, e: RequestError) -> JSONResponse:
        return error(e.status, str(e))

    @app.exception_handler(GroundkitError)
    def bad_input(request: Request, e: GroundkitError) -> JSONResponse:
        return error(400, str(e))

    @app.exception_handler(RequestValidationError)
    def incomplete(request: Request, e: RequestValidationError) -> JSONResponse:
        fields = sorted({str(d["loc"][-1]) for d in e.errors() if d.get("loc")})
        return error(422, f"the form lacks {', '.join(fields) or 'a field'}: send an image, "
                          f"a model and the text its task takes")

    @app.exception_handler(HTTPException)
    def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return error(e.status_code, str(e.detail))

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        # Refuse a body that announces its excess before it is parsed and spooled to disk. It is
        # still read (and dropped), so that the browser gets to see the answer.
        length = request.headers.get("content-length", "")
        if request.method == "POST" and length.isdigit() \
                and int(length) > limits.max_bytes + FORM_SLACK:
            async for _ in request.stream():
                pass
            return error(413, f"the upload is {size_text(int(length))}: images up to "
                              f"{size_text(limits.max_bytes)} are accepted")
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        families = []
        for name in FAMILIES:
            cls = predictor_class(name)
            families.append({"name": name, "title": cls.title, "text": cls.text_name,
                             "hint": cls.text_hint, "region": cls.region_name})
        return {"version": __version__, "families": families,
                "models": [asdict(m) for m in models], "bundled_note": BUNDLED_NOTE,
                "limits": {**asdict(limits), "types": list(IMAGE_TYPES.values())},
                "examples": examples}

    @app.get("/examples/{name}")
    def example(name: str) -> FileResponse:
        if name not in {e["file"] for e in examples}:
            raise RequestError(404, f"no example image {name!r}")
        return FileResponse(EXAMPLES / name)

    @app.post("/api/predict")
    def predict(image: UploadFile = File(...), model: str = Form(...),
                text: str = Form("")) -> dict[str, Any]:
        choice = by_name.get(model)
        if choice is None:
            raise RequestError(404, f"no model {model!r} here; choose one of {sorted(by_name)}")
        rgb = read_upload(image.file.read(limits.max_bytes + 1), image.filename or "the upload",
                          limits)
        takes = predictor_class(choice.family).text_name
        if takes and not text.strip():
            raise RequestError(400, f"type a {takes} first")
        with predictors.lock:
            start = time.perf_counter()
            predictor = predictors.get(choice)
            result = predictor.predict_one(rgb, text.strip() if takes else None)
            shown = render(predictor, rgb, result)
        return {"model": choice.name, "family": choice.family,
                "seconds": round(time.perf_counter() - start, 3), **shown}

    return app


# --- serving ---------------------------------------------------------------------------------------

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def bind(host: str = "127.0.0.1", port: int = 7860) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), bound before the server starts so
    that its address can be printed first. It listens at once: a browser that opens the printed
    address while the server is still starting waits in the backlog instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise GroundkitError(f"cannot listen on {host}:{port}: {e.strerror or e} "
                             f"(choose another --port, or 0 for any free one)") from None
    sock.listen(2048)  # uvicorn's backlog
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(app: FastAPI, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C or SIGTERM."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
