"""Shared test fixtures."""

pytest_plugins = ["fake_openai"]  # the fake_server fixture: a scripted OpenAI-compatible server
