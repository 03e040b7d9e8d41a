"""``metaeol serve``: an OpenAI-compatible embeddings server with dynamic batching.

Needs the ``[serve]`` extra (FastAPI, uvicorn, prometheus-client). Entry points:
:func:`metaeol.serve.app.create_app` (the ASGI app) and :func:`metaeol.serve.server.run`
(the app under uvicorn). See docs/serving.md.
"""
