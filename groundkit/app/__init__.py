"""The web app of ``groundkit serve``: :mod:`groundkit.app.server` (FastAPI), ``page.html`` (the
one hand-written page it serves) and ``examples/`` (example images and texts).

An entry point above :mod:`groundkit.api`, as the command line is; it needs the ``demo`` extra
(``pip install 'groundkit[demo]'``: FastAPI, uvicorn, python-multipart).
"""
