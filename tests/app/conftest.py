"""The web app's fixtures: a tiny referring checkpoint (no referring model is bundled yet) and a
server running in a thread on a free port of 127.0.0.1."""
import threading
import time
from contextlib import contextmanager

import pytest


@contextmanager
def running(app):
    """``app`` served by uvicorn in a thread on a free port of 127.0.0.1; yields its URL."""
    import uvicorn

    from groundkit.app.server import bind, url_of

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def serving():
    """:func:`running`, for the tests: ``with serving(app) as url: ...``."""
    return running
