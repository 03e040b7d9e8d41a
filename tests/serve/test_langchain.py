"""The real LangChain client (langchain-openai's OpenAIEmbeddings) against the server, offline."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
langchain_openai = pytest.importorskip("langchain_openai")
tiktoken = pytest.importorskip("tiktoken")
openai = pytest.importorskip("openai")

from _live_server import KEY, NAME, LiveServer, cosines, reference  # noqa: E402

TEXTS = ["A man is playing a guitar.", "Someone plays music", "Is it raining?"]


@pytest.fixture
def offline_tiktoken(monkeypatch):
    """tiktoken without the internet: ``cl100k_base`` (LangChain's fallback for a model tiktoken
    does not know) is a small byte-level encoding built here and put in tiktoken's own cache,
    so ``tiktoken.get_encoding`` returns it; any attempt to fetch a BPE file fails the test."""
    import tiktoken.load
    import tiktoken.registry

    def no_download(*args, **kwargs):
        raise AssertionError(f"tiktoken tried to fetch {args[:1]}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_download)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", no_download)
    encoding = tiktoken.Encoding(name="cl100k_base", pat_str=r"\s?\S+|\s+",
                                 mergeable_ranks={bytes([b]): b for b in range(256)}, special_tokens={})
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "cl100k_base", encoding)
    return encoding


@pytest.fixture(scope="module")
def server(encoder):
    with LiveServer(encoder, api_key=KEY) as live:
        yield live


def embeddings(server, **kwargs):
    return langchain_openai.OpenAIEmbeddings(model=NAME, base_url=f"{server.url}/v1", api_key=KEY, max_retries=0,
                                             **kwargs)


def test_langchain_sending_text_gets_the_vectors_of_encode(server, encoder, offline_tiktoken):
    client = embeddings(server, check_embedding_ctx_length=False)
    documents = client.embed_documents(TEXTS)
    query = client.embed_query(TEXTS[0])
    expected = reference(encoder, TEXTS)
    assert cosines(documents, expected).min() >= 0.99999 and cosines(query, expected[0]) >= 0.99999


def test_langchain_default_sends_tiktoken_ids_and_gets_a_clear_400(server, offline_tiktoken):
    client = embeddings(server)  # check_embedding_ctx_length=True: texts become tiktoken ids
    assert offline_tiktoken.encode_ordinary(TEXTS[0])  # the ids LangChain computes and sends
    with pytest.raises(openai.BadRequestError) as refused:
        client.embed_documents(TEXTS)
    assert refused.value.status_code == 400 and refused.value.code == "token_ids_not_accepted"
    assert "check_embedding_ctx_length=False" in refused.value.message
