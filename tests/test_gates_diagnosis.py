"""The gates diagnosis's controls (benchmarks/gates_diagnosis.py): the random choice keeps exactly the counts it
is given and, given every token, is the plain model; the sentence share counts what is left of each sentence."""
from __future__ import annotations

import torch

from benchmarks.gates_diagnosis import random_same_counts, sentence_shares
from dynbench.backbone import load_backbone
from dynbench.live import LiveBatch
from dynbench.method import get_method
from methods.full import final_output
from tests.conftest import make_config, random_batch


def _plain():
    cfg = make_config("method=full", "model=tiny", "model.random.num_hidden_layers=3")
    torch.manual_seed(0)
    return get_method("full")(cfg.method, cfg.task).build(load_backbone(cfg.model, 0), None).eval()


@torch.no_grad()
def test_random_choice_keeps_the_counts_it_is_given_and_cls() -> None:
    model, batch = _plain(), random_batch([9, 6, 4])
    counts = torch.tensor([[9, 5, 2], [6, 6, 3], [4, 1, 1]])
    _, live = random_same_counts(model, batch, counts, torch.Generator().manual_seed(0))
    assert live.trace.layer_tokens.tolist() == counts.tolist()
    assert (live.positions[:, 0] == 0).all()  # [CLS] stays
    assert live.mask.sum(1).tolist() == [2, 3, 1]


@torch.no_grad()
def test_random_choice_of_every_token_is_the_plain_model() -> None:
    model, batch = _plain(), random_batch([9, 6, 4])
    lengths = batch["attention_mask"].sum(1, keepdim=True).expand(-1, 3)
    logits, _ = random_same_counts(model, batch, lengths, torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits, final_output(model, batch).logits)


def test_sentence_share_is_the_lesser_share_of_the_two_sentences_left() -> None:
    model, batch = _plain(), random_batch([8, 6])
    # row 0: sentence 1 = positions 0-4 (5 tokens), sentence 2 = 5-7 (3); row 1: 0-1 (2) and 2-5 (4)
    batch["token_type_ids"] = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1, 0, 0]])
    live = LiveBatch(model.backbone, batch)
    keep = torch.zeros(2, 8, dtype=torch.bool)
    keep[0, [1, 2, 5]] = True  # + [CLS]: 4 of 5 and 1 of 3
    keep[1, [2, 3, 4, 5]] = True  # + [CLS]: 1 of 2 and 4 of 4
    live.keep_tokens(keep)
    torch.testing.assert_close(torch.from_numpy(sentence_shares(batch, live)), torch.tensor([1 / 3, 1 / 2]))
