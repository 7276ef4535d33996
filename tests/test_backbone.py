"""The layer-by-layer backbone reproduces the library's own forward, for every supported family."""
from __future__ import annotations

import pytest
import torch
from transformers import AlbertConfig, AlbertModel, BertConfig, BertModel, RobertaConfig, RobertaModel

from dynbench.backbone import Backbone, load_backbone
from dynbench.errors import DynbenchError
from tests.conftest import make_config

SMALL = dict(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.mark.parametrize("model", [
    BertModel(BertConfig(**SMALL)),
    RobertaModel(RobertaConfig(**SMALL, pad_token_id=1)),
    AlbertModel(AlbertConfig(**SMALL, embedding_size=16)),
], ids=["bert", "roberta", "albert"])
def test_stepwise_forward_equals_library_forward(model) -> None:
    torch.manual_seed(0)
    backbone = Backbone(model.eval())
    ids = torch.randint(5, 99, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = model.config.pad_token_id
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask)
        h = backbone.embed(ids)
        for i in range(backbone.num_layers):
            h = backbone.layer(i, h, mask)
        pooled = backbone.pool(h, mask)
    real = mask.bool()
    torch.testing.assert_close(h[real], ref.last_hidden_state[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, ref.pooler_output, atol=1e-5, rtol=1e-5)


def test_mean_pooling_averages_the_tokens_present_only() -> None:
    backbone = Backbone(BertModel(BertConfig(**SMALL)), pooling="mean")
    h = torch.randn(2, 4, 32)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    pooled = backbone.pool(h, mask)
    torch.testing.assert_close(pooled[0], h[0, :3].mean(0))
    torch.testing.assert_close(pooled[1], h[1, 0])
    h[0, 3] = 1e6  # padding never leaks in
    torch.testing.assert_close(backbone.pool(h, mask)[0], pooled[0])
    soft = torch.tensor([[1.0, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # key weights of training token gates
    torch.testing.assert_close(backbone.pool(h, soft)[0], (h[0, 0] + 0.5 * h[0, 1]) / 1.5)


def test_embedded_minilm_pools_what_early_layers_say_about_each_input() -> None:
    """all-MiniLM-L6-v2 was trained with mean pooling: its [CLS] state after layers 1-5 is nearly the same
    vector for every input, the mean over the tokens is not. Its config pools by the mean."""
    cfg = make_config("model=minilm").model
    assert cfg.pooling == "mean"
    from dynbench.backbone import load_tokenizer

    backbone, tokenizer = load_backbone(cfg).eval(), load_tokenizer(cfg)
    texts = ["The cat sat on the mat.", "Stocks fell sharply on Monday after the report.",
             "He has never been to Paris.", "A quick brown fox jumps over the lazy dog again and again."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")

    def min_cosine(x: torch.Tensor) -> float:
        x = torch.nn.functional.normalize(x, dim=-1)
        return float((x @ x.T).min())

    with torch.no_grad():
        h = backbone.embed(batch["input_ids"], batch["token_type_ids"])
        h = backbone.layer(0, h, batch["attention_mask"])
    assert min_cosine(h[:, 0]) > 0.99  # [CLS] after layer 1: one vector for all four inputs
    assert min_cosine(backbone.pool(h, batch["attention_mask"])) < 0.9


def test_truncate_keeps_first_k_layers() -> None:
    backbone = Backbone(BertModel(BertConfig(**SMALL)))
    first = backbone.model.encoder.layer[0]
    backbone.truncate(2)
    assert backbone.num_layers == 2 and backbone.model.encoder.layer[0] is first
    assert not any(k.startswith("model.encoder.layer.2.") for k in backbone.state_dict())
    with pytest.raises(DynbenchError, match="choose 1..2"):
        backbone.truncate(3)


def test_embedded_minilm_loads_without_network() -> None:
    backbone = load_backbone(make_config("model=minilm").model)
    assert (backbone.num_layers, backbone.hidden_size) == (6, 384)
    assert sum(p.numel() for p in backbone.parameters()) == pytest.approx(22.7e6, rel=0.01)


def test_max_length_above_the_model_limit() -> None:
    with pytest.raises(DynbenchError, match="model.max_length=1024 exceeds minilm's limit of 512"):
        load_backbone(make_config("model=minilm", "model.max_length=1024").model)


def test_unreachable_hub_model_says_what_to_do(monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fails at once, as an unreachable hub does
    with pytest.raises(DynbenchError, match="hub is unreachable.*model=minilm"):
        load_backbone(make_config("model=bert-base").model)
