"""Line-by-line ports of the official code of three methods, run on a small model.

Each function follows one official file and function (cited in its docstring) with the lines
that decide a vector kept as they are: the prompt string, the tokenization, the padding, the
tokens pooled and the projection. Multi-GPU, quantization, data loading and evaluation are left
out. ``make_reference.py`` writes their vectors to ``methods_reference.npz``;
``tests/test_methods_reference.py`` compares MetaEOL with these ports (live) and with the file.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

# the sentences of the reference file (no empty one: the official echo pooling gives it a zero vector)
SENTENCES = ["A man is playing a guitar.", "Someone plays music", 'He said "hello" to her?',
             "The quick brown fox jumps over the lazy dog near the riverbank at dawn", "Is it raining?", "x"]
FILTER_RATIOS = (2, 4)

# kongds/scaling_sentemb@8567aa0 run_icl.sh: icl_examples['opt-2.7b'] and ['opt-125m'] (lines of icl_examples.txt)
ICL_LINES = {
    "opt-2.7b": 'This_sentence_:_"A_jockey_riding_a_horse."_means_in_one_word:"Equestrian".'
                'This_sentence_:_"*sent_0*"_means_in_one_word:"',
    "opt-125m": 'This_sentence_:_"A_man_is_smoking."_means_in_one_word:"Smoking".'
                'This_sentence_:_"*sent_0*"_means_in_one_word:"',
}
# jakespringer/echo-embeddings issue #8 (zero-shot prompt) in the EchoParser template syntax of README.md
ECHO_TEMPLATE = "<s>Rewrite the following paragraph: {!%%text%%}. The rewritten paragraph: {%%text%%}"
# CentreChen/EmbFilter@c3958e3 run4llama_prompteol.py, __main__
EMBFILTER_TEMPLATE = "Summarize the sentence: \"{text}\" in one word:\""


def reference_vectors(folder: str) -> dict[str, np.ndarray]:
    """Every reference vector set on the model in ``folder``, by ``method/setting``."""
    out = {f"icl/{name}": scaling_sentemb_icl(folder, line, SENTENCES) for name, line in ICL_LINES.items()}
    out.update({f"echo/{strategy}": echo_embeddings(folder, SENTENCES, strategy) for strategy in ("last", "mean")})
    out.update({f"embfilter/{r}": embfilter_prompteol(folder, SENTENCES, r) for r in FILTER_RATIOS})
    return out


def scaling_sentemb_icl(folder: str, icl_line: str, sentences: list[str]) -> np.ndarray:
    """kongds/scaling_sentemb evaluation.py, ``main()``: the tokenizer set-up and ``batcher()``
    with ``--mask_embedding_sentence --mask_embedding_sentence_template <icl line>`` (not ``--avg``),
    fp32 instead of ``--load_kbit``."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token_id = 0  # unk. we want this to be different from the eos token
    tokenizer.padding_side = "left"  # Allow batched inference
    sentences = list(sentences)
    template = icl_line
    template = template.replace('_', ' ').replace('*sep+*', '').replace('*cls*', '')
    for i, s in enumerate(sentences):
        if len(s) > 0 and s[-1] not in '.?"\'': s += '.'
        s = s.replace('"', '\'')
        if len(s) > 0 and '?' == s[-1]: s = s[:-1] + '.'
        sentences[i] = template.replace('*sent 0*', s).strip()
    # batch_encode_plus, which transformers 5 removed: the tokenizer's __call__ on the list
    batch = tokenizer(sentences, return_tensors='pt', padding=True, max_length=None, truncation=False)
    with torch.no_grad():
        hidden_states = model(output_hidden_states=True, return_dict=True, **batch).hidden_states
        outputs = hidden_states[-1][:, -1, :]
    return outputs.float().numpy()


class EchoParser:
    """jakespringer/echo-embeddings echo_embeddings.py, ``EchoParser`` (``__init__`` with a path,
    ``_parse_template``, ``_tokenize_piece``, ``_tokenize_from_pieces``, ``tokenize``)."""

    def __init__(self, folder: str, templates: dict[str, str], max_length: int | None = None):
        self.tokenizer = AutoTokenizer.from_pretrained(folder, add_bos_token=False, add_eos_token=False)
        if self.tokenizer.padding_side != 'right':
            self.tokenizer.padding_side = 'right'
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = '<unk>'
        self.template_pieces = {k: self._parse_template(t) for k, t in templates.items()}
        self.max_length = max_length

    def _parse_template(self, template):
        matches = [m for m in re.finditer(r'\{(.|\n|\r|\t)+?\}', template)]
        template_pieces = []
        for i, m in enumerate(matches):
            if i == 0:
                template_pieces.append(template[:m.start()])
            else:
                template_pieces.append(template[matches[i - 1].end():m.start()])
            template_pieces.append(m.group())
        template_pieces.append(template[matches[-1].end():])
        template_pieces = [t for t in template_pieces if t]
        tokenized_pieces = []
        for template_piece in template_pieces:
            if template_piece.startswith('{') and template_piece.endswith('}'):
                tokenized_pieces.append(template_piece[1:-1])
            else:
                tokenized_pieces.append(self.tokenizer(template_piece)['input_ids'])
        return tokenized_pieces

    def _tokenize_piece(self, x, template_piece):
        if isinstance(template_piece, str):
            if template_piece.startswith('!'):
                template_piece = template_piece[1:]
                embed_mask_value = 0
            else:
                embed_mask_value = 1
            for k, v in x.items():
                template_piece = template_piece.replace(f'%%{k}%%', v)
            tokenized_piece = self.tokenizer(template_piece)['input_ids']
            tokenized_piece = tokenized_piece[:self.max_length] if self.max_length is not None else tokenized_piece
            return {'input_ids': torch.tensor(tokenized_piece, dtype=torch.long),
                    'attention_mask': torch.ones(len(tokenized_piece), dtype=torch.long),
                    'embed_mask': torch.full((len(tokenized_piece),), embed_mask_value, dtype=torch.long)}
        template_piece = template_piece[:self.max_length] if self.max_length is not None else template_piece
        return {'input_ids': torch.tensor(template_piece, dtype=torch.long),
                'attention_mask': torch.ones(len(template_piece), dtype=torch.long),
                'embed_mask': torch.zeros(len(template_piece), dtype=torch.long)}

    def tokenize(self, xs):
        xs = [(x[0], {"text": x[1]}) for x in xs]  # example.py: ("query", {"text": ...}) per sentence
        tokenized = []
        for x in xs:
            pieces = [self._tokenize_piece(x[1], p) for p in self.template_pieces[x[0]]]
            tokenized.append({k: torch.cat([z[k] for z in pieces]) for k in pieces[0]})
        max_tokenized_length = max([len(x['input_ids']) for x in tokenized])
        for x in tokenized:
            pad = max_tokenized_length - len(x['input_ids'])
            if pad > 0:
                x['input_ids'] = torch.cat([x['input_ids'], torch.tensor([self.tokenizer.pad_token_id] * pad)])
                x['attention_mask'] = torch.cat([x['attention_mask'], torch.zeros(pad, dtype=torch.long)])
                x['embed_mask'] = torch.cat([x['embed_mask'], torch.zeros(pad, dtype=torch.long)])
        return {k: torch.stack([z[k] for z in tokenized]) for k in tokenized[0]}


def echo_pooling(xs, strategy: str) -> torch.Tensor:
    """jakespringer/echo-embeddings echo_embeddings.py, ``EchoPooling.forward``."""
    token_embeddings = xs['token_embeddings']
    embed_mask = xs['embed_mask'].to(token_embeddings.device)
    if strategy == 'mean':
        pooled = torch.sum(token_embeddings * embed_mask.unsqueeze(-1), dim=1) / torch.sum(embed_mask, dim=1).unsqueeze(-1)
        pooled.masked_fill_(torch.isnan(pooled), 0)
    else:
        def _extract_last_nonzero(m):
            nonzeros = (m == 1).nonzero(as_tuple=True)[0]
            return torch.max(nonzeros) if nonzeros.size(0) > 0 else 0
        last_indices = torch.tensor([_extract_last_nonzero(m) for m in embed_mask])
        i = torch.arange(token_embeddings.shape[0]).reshape(token_embeddings.shape[0], 1, 1)
        j = last_indices.reshape(last_indices.shape[0], 1, 1)
        k = torch.arange(token_embeddings.shape[2])
        pooled = token_embeddings[i, j, k][:, 0, :]
        pooled.masked_fill_(torch.isnan(pooled), 0)
    return pooled


def echo_embeddings(folder: str, sentences: list[str], strategy: str) -> np.ndarray:
    """jakespringer/echo-embeddings: ``EchoParser`` -> ``EchoEmbeddingsMistral.forward`` (the base
    model's ``last_hidden_state``) -> ``EchoPooling``, as README.md's usage, with the zero-shot prompt."""
    parser = EchoParser(folder, {'query': ECHO_TEMPLATE})
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    xs = parser.tokenize([('query', s) for s in sentences])
    with torch.no_grad():
        xs['token_embeddings'] = model(input_ids=xs['input_ids'], attention_mask=xs['attention_mask']).last_hidden_state
        return echo_pooling(xs, strategy).numpy()


def embfilter_prompteol(folder: str, sentences: list[str], filter_ratio: int) -> np.ndarray:
    """CentreChen/EmbFilter: models/modeling_llama_lr.py ``LlamaForCausalLM.set_lm_embed`` (the
    filter) and ``LlamaModel.forward`` (``lm_embed(norm(h))``), run4llama_prompteol.py
    ``transform_func`` and ``EncoderWrapper.encode`` with ``l2_normalize=False`` (fp32, no flash attention)."""
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    tokenizer.pad_token_id = 0
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    filter_num = model.config.hidden_size // filter_ratio
    # set_lm_embed(filter_num)
    hidden_size = model.config.hidden_size
    _, _, Vh = torch.linalg.svd(model.lm_head.weight.float(), full_matrices=False)
    lm_embed = nn.Linear(hidden_size, hidden_size, bias=False)
    lm_embed.weight = nn.Parameter(torch.eye(hidden_size, device=Vh.device), requires_grad=False)
    if filter_num < hidden_size:
        lm_embed = nn.Linear(hidden_size, filter_num, bias=False)
        start_idx = (hidden_size - filter_num) // 2
        end_idx = start_idx + filter_num
        lm_embed.weight = nn.Parameter(Vh[start_idx:end_idx, :], requires_grad=False)
    # transform_func (no text is longer than max_length here) and encode
    texts = [EMBFILTER_TEMPLATE.format(text=text) for text in sentences]
    batch = tokenizer(texts, padding=True, truncation=False, return_tensors="pt")
    with torch.no_grad():
        last_hidden_state = lm_embed(model.model(**batch, use_cache=False).last_hidden_state)
        embeds = last_hidden_state[:, -1, :]  # last token pooling
    return embeds.to(dtype=torch.float64).numpy().astype(np.float32)
