"""Retrieval metrics on similarity matrices whose ranks are known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.train.metrics import dual_softmax, retrieval_metrics, text_to_video_ranks, video_to_text_ranks


def _matrix_with_t2v_ranks(ranks: list[int], num_clips: int, seed: int = 0) -> np.ndarray:
    """One row per caption i (own clip i) where clip i sits at position ranks[i] among distinct scores."""
    rng = np.random.default_rng(seed)
    sim = np.zeros((len(ranks), num_clips))
    for i, rank in enumerate(ranks):
        others = rng.permutation([j for j in range(num_clips) if j != i])
        order = np.insert(others, rank - 1, i)  # clips from best to worst
        sim[i, order] = np.linspace(1.0, -1.0, num_clips)
    return sim


def _brute_force_ranks(sim: np.ndarray, owner: list[int], pessimistic: bool) -> tuple[list[int], list[int]]:
    """The tie rule spelled out with loops: 1 + wrong candidates scoring above (or equal to) the best right one."""

    def rank(right: list[float], wrong: list[float]) -> int:
        best = max(right)
        return 1 + sum(w > best or (pessimistic and w == best) for w in wrong)

    m, n = sim.shape
    t2v = [rank([sim[i, owner[i]]], [sim[i, j] for j in range(n) if j != owner[i]]) for i in range(m)]
    v2t = [
        rank([sim[i, j] for i in range(m) if owner[i] == j], [sim[i, j] for i in range(m) if owner[i] != j])
        for j in range(n)
    ]
    return t2v, v2t


def test_identity_is_perfect() -> None:
    result = retrieval_metrics(np.eye(7), list(range(7)))
    perfect = {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 1.0}
    assert result == {"t2v": perfect, "v2t": perfect, "videos": 7, "texts": 7}


def test_permuted_identity_follows_caption_clip() -> None:
    perm = np.random.default_rng(1).permutation(12)
    sim = np.eye(12)[:, perm]  # caption i scores highest on column where perm == i
    owner = [int(np.flatnonzero(perm == i)[0]) for i in range(12)]
    assert retrieval_metrics(sim, owner)["t2v"]["R@1"] == 100.0
    shifted = [(o + 1) % 12 for o in owner]  # every caption assigned to a wrong clip
    t2v = retrieval_metrics(sim, shifted)["t2v"]
    assert t2v["R@1"] == 0.0
    # the own clip ties with 10 other zeros behind the one 1: pessimistic rank 12
    assert t2v["MdR"] == 12.0


def test_t2v_known_ranks() -> None:
    ranks = [1, 1, 2, 3, 5, 6, 10, 12, 4, 1, 11, 7]
    sim = _matrix_with_t2v_ranks(ranks, num_clips=12)
    assert text_to_video_ranks(sim, np.arange(12)).tolist() == ranks
    t2v = retrieval_metrics(sim, list(range(12)))["t2v"]
    assert t2v["R@1"] == pytest.approx(100 * 3 / 12)
    assert t2v["R@5"] == pytest.approx(100 * 7 / 12)
    assert t2v["R@10"] == pytest.approx(100 * 10 / 12)
    assert t2v["MdR"] == 4.5  # sorted: 1 1 1 2 3 4 5 6 7 10 11 12
    assert t2v["MnR"] == pytest.approx(63 / 12)


# Six captions, two per clip; rows are captions, columns clips 0, 1, 2.
MULTI = np.array(
    [
        [0.9, 0.1, 0.2],  # clip 0: rank 1
        [0.3, 0.5, 0.45],  # clip 0: rank 3
        [0.6, 0.7, 0.1],  # clip 1: rank 1
        [0.8, 0.2, 0.42],  # clip 1: rank 3
        [0.1, 0.9, 0.35],  # clip 2: rank 2
        [0.2, 0.3, 0.4],  # clip 2: rank 1
    ]
)
MULTI_OWNER = [0, 0, 1, 1, 2, 2]


def test_several_captions_per_clip_t2v() -> None:
    assert text_to_video_ranks(MULTI, np.array(MULTI_OWNER)).tolist() == [1, 3, 1, 3, 2, 1]
    result = retrieval_metrics(MULTI, MULTI_OWNER)
    assert result["t2v"] == {"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.5, "MnR": pytest.approx(11 / 6)}
    assert (result["videos"], result["texts"]) == (3, 6)


def test_several_captions_per_clip_v2t_uses_best_own_caption() -> None:
    # clip 0: best own 0.9, nothing above -> 1; clip 1: best own 0.7, c4's 0.9 above -> 2;
    # clip 2: best own is c5's 0.4 (c4's 0.35 would rank 4th), c1's 0.45 and c3's 0.42 above -> 3
    assert video_to_text_ranks(MULTI, np.array(MULTI_OWNER)).tolist() == [1, 2, 3]
    v2t = retrieval_metrics(MULTI, MULTI_OWNER)["v2t"]
    assert v2t == {"R@1": pytest.approx(100 / 3), "R@5": 100.0, "R@10": 100.0, "MdR": 2.0, "MnR": 2.0}


def test_constant_scores_rank_last_unless_optimistic() -> None:
    sim = np.full((4, 4), 0.5)
    pessimistic = retrieval_metrics(sim, [0, 1, 2, 3])
    assert pessimistic["t2v"]["R@1"] == 0.0 and pessimistic["t2v"]["MdR"] == 4.0
    assert pessimistic["v2t"]["MnR"] == 4.0
    optimistic = retrieval_metrics(sim, [0, 1, 2, 3], ties="optimistic")
    assert optimistic["t2v"]["R@1"] == 100.0 and optimistic["v2t"]["R@1"] == 100.0


def test_partial_ties() -> None:
    # caption 0: one clip above its own, one tied -> pessimistic 3, optimistic 2
    sim = np.array([[0.5, 0.9, 0.5, 0.1], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    owner = np.array([0, 1, 2, 3])
    assert text_to_video_ranks(sim, owner).tolist() == [3, 1, 1, 1]
    assert text_to_video_ranks(sim, owner, ties="optimistic").tolist() == [2, 1, 1, 1]
    # v2t: two own captions tied at the best score do not count against the clip; a tied wrong one does
    sim = np.array([[0.7, 0.1], [0.7, 0.2], [0.3, 0.9], [0.7, 0.8]])
    owner = np.array([0, 0, 1, 1])
    assert video_to_text_ranks(sim, owner).tolist() == [2, 1]
    assert video_to_text_ranks(sim, owner, ties="optimistic").tolist() == [1, 1]


def test_matches_brute_force_on_heavily_tied_matrices() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        num_clips, num_captions = 9, 25
        owner = np.concatenate([np.arange(num_clips), rng.integers(0, num_clips, num_captions - num_clips)])
        sim = rng.integers(0, 4, size=(num_captions, num_clips)).astype(np.float32)
        for pessimistic in (True, False):
            ties = "pessimistic" if pessimistic else "optimistic"
            t2v, v2t = _brute_force_ranks(sim, owner.tolist(), pessimistic)
            assert text_to_video_ranks(sim, owner, ties).tolist() == t2v
            assert video_to_text_ranks(sim, owner, ties).tolist() == v2t


def test_torch_input_matches_numpy() -> None:
    sim = _matrix_with_t2v_ranks([2, 1, 3, 1, 5], num_clips=5)
    expected = retrieval_metrics(sim, range(5))
    assert retrieval_metrics(torch.tensor(sim), list(range(5))) == expected
    assert retrieval_metrics(torch.tensor(sim, dtype=torch.bfloat16), list(range(5)))["t2v"]["R@1"] == 40.0


def test_a_thousand_by_thousand_matrix_gets_the_ranks_the_tie_rule_gives() -> None:
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((1000, 1000)).astype(np.float32) + 8 * np.eye(1000, dtype=np.float32)
    sim[::7, 3] = sim[::7, 1]  # some exact ties
    owner = np.arange(1000)
    t2v, v2t = _brute_force_ranks(sim, owner.tolist(), pessimistic=True)
    assert text_to_video_ranks(sim, owner).tolist() == t2v and video_to_text_ranks(sim, owner).tolist() == v2t
    result = retrieval_metrics(sim, range(1000))
    assert result["t2v"]["R@1"] > 99.0 and result["videos"] == result["texts"] == 1000


def test_unknown_tie_rule() -> None:
    with pytest.raises(ValueError, match="ties"):
        retrieval_metrics(np.eye(2), [0, 1], ties="average")


def _hub_matrix(n: int = 8) -> np.ndarray:
    """Caption i belongs to clip i (0.8), but clip 0 is a hub scoring 0.9 for every caption; the rest 0.1."""
    sim = np.full((n, n), 0.1)
    np.fill_diagonal(sim, 0.8)
    sim[:, 0] = 0.9
    return sim


def test_dual_softmax_keeps_type_shape_and_dtype() -> None:
    sim = np.random.default_rng(0).uniform(-1, 1, (5, 3)).astype(np.float32)
    out = dual_softmax(sim)
    assert isinstance(out, np.ndarray) and out.shape == (5, 3) and out.dtype == np.float32
    tensor_out = dual_softmax(torch.from_numpy(sim), temperature=50.0, axis=1)
    assert isinstance(tensor_out, torch.Tensor) and tensor_out.shape == (5, 3) and tensor_out.dtype == torch.float32
    np.testing.assert_allclose(tensor_out.numpy(), dual_softmax(sim, 50.0, axis=1), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="axis"):
        dual_softmax(sim, axis=2)


def test_dual_softmax_demotes_a_hub_clip() -> None:
    sim = _hub_matrix()
    owner = list(range(8))
    assert retrieval_metrics(sim, owner)["t2v"]["R@1"] == pytest.approx(100 / 8)  # only the hub's own caption
    assert text_to_video_ranks(dual_softmax(sim), np.arange(8)).tolist() == [1] * 8
    assert retrieval_metrics(sim, owner, dual_softmax_temperature=100.0)["t2v"]["R@1"] == 100.0


def test_dual_softmax_for_v2t_demotes_a_hub_caption() -> None:
    sim = _hub_matrix().T.copy()  # caption 0 now scores 0.9 with every clip
    owner = list(range(8))
    assert retrieval_metrics(sim, owner)["v2t"]["R@1"] == pytest.approx(100 / 8)
    assert retrieval_metrics(sim, owner, dual_softmax_temperature=100.0)["v2t"]["R@1"] == 100.0
