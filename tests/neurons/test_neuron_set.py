"""NeuronSet: files that remember which model they index, set algebra, overlap and the per-layer histogram."""

from types import SimpleNamespace

import pytest

from lalm_lens.neurons import NeuronSet

FINGERPRINT = {"arch": "qwen2_audio", "n_layers": 3, "d_mlp": 16, "site": "mlp.hook_gate"}


def cfg(**overrides):
    base = dict(arch="qwen2_audio", n_layers=3, d_mlp=16, audio_n_layers=2, audio_d_mlp=32)
    return SimpleNamespace(cfg=SimpleNamespace(**{**base, **overrides}))


@pytest.fixture
def a():
    return NeuronSet({"happy": {0: [3, 1, 1], 2: [5]}, "sad": {1: [2, 4]}}, FINGERPRINT)


@pytest.fixture
def b():
    return NeuronSet({"happy": {0: [1, 7]}, "sad": {1: [4]}}, FINGERPRINT)


def test_indices_are_sorted_unique_and_counted(a):
    assert a["happy"][0].tolist() == [1, 3] and a.size("happy") == 3 and a.size() == 5
    assert a.counts().tolist() == [[2, 0, 1], [0, 2, 0]]
    assert a.mask("sad")[1].nonzero().flatten().tolist() == [2, 4]
    with pytest.raises(ValueError, match="must lie in 0..15"):
        NeuronSet({"happy": {0: [16]}}, FINGERPRINT)
    with pytest.raises(ValueError, match="layer 3 is outside"):
        NeuronSet({"happy": {3: [0]}}, FINGERPRINT)


def test_set_operations_and_jaccard(a, b):
    assert (a | b)["happy"][0].tolist() == [1, 3, 7]
    assert {l: v.tolist() for l, v in (a & b)["happy"].items()} == {0: [1]}
    assert (a - b)["sad"][1].tolist() == [2]
    assert a.jaccard(b, "happy") == pytest.approx(1 / 4)
    assert a.jaccard(b) == pytest.approx(2 / 6)
    assert a.overlap_matrix().diagonal().tolist() == [1.0, 1.0]
    other = NeuronSet({"happy": {0: [1]}}, {**FINGERPRINT, "site": "mlp.hook_post"})
    with pytest.raises(ValueError, match="different models/sites"):
        a | other


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_save_load_round_trip_and_model_check(a, tmp_path, suffix):
    path = a.save(tmp_path / f"set{suffix}")
    assert NeuronSet.load(path, model=cfg()) == a
    with pytest.raises(ValueError, match="select neurons on this model"):
        NeuronSet.load(path, model=cfg(n_layers=4))
    with pytest.raises(ValueError, match="select neurons on this model"):
        NeuronSet.load(path, model=cfg(arch="qwen2_5_omni_thinker"))
    with pytest.raises(ValueError, match=".json or .safetensors"):
        a.save(tmp_path / "set.pt")


def test_histogram_draws_one_bar_per_class_and_layer(a, tmp_path):
    ax = a.histogram()
    assert len(ax.patches) == 2 * 3
    assert sorted(p.get_height() for p in ax.patches) == [0, 0, 0, 1, 2, 2]
    ax.figure.savefig(tmp_path / "hist.png")
