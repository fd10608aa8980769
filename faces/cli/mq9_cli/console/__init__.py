"""The web console of ``mq9 console`` (the ``console`` extra: Starlette, Jinja2, uvicorn)."""
