"""The toniq dashboard: an ASGI app (Starlette) that shows and steers a toniq store.

Run it on its own with ``toniq web`` (``pip install 'toniq[web]'``), or mount it in your
own ASGI app::

    from fastapi import FastAPI
    import toniq.web

    api = FastAPI()
    api.mount("/toniq", toniq.web.create_app())

See ``docs/web.md`` for Django, authentication and the anti-forgery protection.
"""

from toniq.web.app import create_app

__all__ = ["create_app"]
