"""NeuronStats: per-class neuron statistics read during forwards, merged across shards and processes."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import lalm_lens as ll
from conftest import noise
from lalm_lens.neurons import NeuronStats
from lalm_lens.zoo.tiny import save_tiny_qwen2_audio

CLASSES = ("neutral", "happy", "angry", "sad")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ll.HookedLALM.from_pretrained(save_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny_qwen2_audio")))


@pytest.fixture(scope="module")
def shards(tiny):
    """Two batches of clips of different lengths (so padded), with labels."""
    out = []
    for start in (0, 3):
        waves = [noise(1.0 + 0.5 * k, seed=start + k) for k in range(3)]
        labels = [CLASSES[(start + k) % 4] for k in range(3)]
        out.append((tiny.prepare(waves, "What emotion does the speaker express?", sampling_rate=16000), labels))
    return out


def fill(tiny, shards, **kwargs):
    stats = NeuronStats.for_model(tiny, CLASSES, **kwargs)
    for batch, labels in shards:
        stats.accumulate(tiny, batch, labels)
    return stats


@pytest.mark.parametrize("site", ["mlp.hook_gate", "mlp.hook_post", "audio.mlp.hook_post"])
def test_two_shards_merged_equal_one_pass(tiny, shards, site):
    whole = fill(tiny, shards, site=site)
    merged = fill(tiny, shards[:1], site=site) + fill(tiny, shards[1:], site=site)
    for name in ("fires", "tokens", "examples"):
        assert torch.equal(getattr(merged, name), getattr(whole, name)), name
    # float64 sums of the same float32 per-batch sums, added in another order: equal to rounding.
    torch.testing.assert_close(merged.sum, whole.sum, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merged.sumsq, whole.sumsq, rtol=1e-12, atol=1e-12)
    assert whole.examples.tolist() == [2, 2, 1, 1]


def test_counts_match_a_cached_forward(tiny, shards):
    batch, labels = shards[0]
    stats = fill(tiny, shards[:1], layers=[1])
    _, cache = tiny.run_with_cache(batch, names_filter="blocks.1.mlp.hook_gate")
    acts = cache["blocks.1.mlp.hook_gate"]
    real = batch.inputs["attention_mask"].bool()
    for c, cls in enumerate(CLASSES):
        rows = [b for b, label in enumerate(labels) if label == cls]
        if not rows:
            assert stats.tokens[c, 1] == 0
            continue
        x = torch.cat([acts[b][real[b]] for b in rows])
        assert stats.tokens[c, 1] == x.shape[0]
        assert torch.equal(stats.fires[c, 1], (x > 0).sum(0))
        # float32 activations summed over ~100 tokens in two different orders
        torch.testing.assert_close(stats.sum[c, 1], x.double().sum(0), rtol=1e-5, atol=1e-5)
    assert stats.tokens[:, 0].sum() == 0, "layers not asked for are not read"


def test_positions_split_the_real_tokens(tiny, shards):
    batch, _ = shards[0]
    tokens = {pos: fill(tiny, shards[:1], positions=pos).tokens[:, 0] for pos in ("all", "audio", "text", "last")}
    assert torch.equal(tokens["audio"] + tokens["text"], tokens["all"])
    assert tokens["last"].tolist() == [1, 1, 1, 0]
    n_audio = [len(ll.audio_positions(spans)) for spans in batch.audio_spans]
    assert tokens["audio"][:3].tolist() == n_audio
    assert tokens["all"].sum() == batch.inputs["attention_mask"].sum(), "padding is never counted"


def test_encoder_stats_count_the_frames_that_feed_audio_tokens(tiny, shards):
    batch, _ = shards[0]
    stats = fill(tiny, shards[:1], site="audio.mlp.hook_post")
    frames = [2 * len(ll.audio_positions(spans)) for spans in batch.audio_spans]
    assert stats.tokens[:3, 0].tolist() == frames
    with pytest.raises(ValueError, match="encoder neurons see only audio frames"):
        NeuronStats.for_model(tiny, CLASSES, site="audio.mlp.hook_post", positions="text")


def test_derived_moments_and_save_load(tiny, shards, tmp_path):
    stats = fill(tiny, shards)
    assert torch.all((stats.probability >= 0) & (stats.probability <= 1))
    assert torch.all(stats.var >= 0)
    back = NeuronStats.load(stats.save(tmp_path / "stats.safetensors"))
    assert back.classes == stats.classes and back.fingerprint == stats.fingerprint
    assert torch.equal(back.fires, stats.fires) and torch.equal(back.sum, stats.sum)


def test_bad_input_is_refused(tiny, shards):
    batch, labels = shards[0]
    stats = NeuronStats.for_model(tiny, CLASSES)
    with pytest.raises(ValueError, match="unknown class 'bored'"):
        stats.fwd_hooks(batch, ["bored", "happy", "sad"])
    with pytest.raises(ValueError, match="2 labels for a batch of 3"):
        stats.fwd_hooks(batch, labels[:2])
    with pytest.raises(ValueError, match="different set-ups"):
        stats + NeuronStats.for_model(tiny, CLASSES, site="mlp.hook_post")
    with pytest.raises(ValueError, match="unknown neuron site"):
        NeuronStats.for_model(tiny, CLASSES, site="attn.hook_z")
    with pytest.raises(ValueError, match="no tokens were counted for class"):
        NeuronStats.for_model(tiny, CLASSES).probability
    with pytest.raises(ValueError, match="not generate"):
        tiny.generate(batch, max_new_tokens=2, fwd_hooks=stats.fwd_hooks(batch, labels))
    assert not any(p.fwd_hooks for p in tiny.hook_dict.values()), "a failed run leaves no hook behind"


# -- torch.distributed: shards on two processes, summed with all_reduce ------------------------------

FINGERPRINT = {"arch": "synthetic", "n_layers": 2, "d_mlp": 8, "site": "mlp.hook_gate"}


def synthetic_shard(index: int):
    """Activations ``[row, pos, neuron]``, a position mask and a class per row, seeded by shard."""
    g = torch.Generator().manual_seed(index)
    acts = torch.randn(3, 5, 8, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.3
    labels = torch.randint(0, 2, (3,), generator=g)
    return acts, mask, labels


def shard_stats(indices) -> NeuronStats:
    stats = NeuronStats(["a", "b"], FINGERPRINT)
    for i in indices:
        acts, mask, labels = synthetic_shard(i)
        for layer in range(2):
            stats.update(acts * (layer + 1), mask, labels, layer)
    return stats


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        stats = shard_stats(range(rank, 6, world)).all_reduce()
        if rank == 0:
            stats.save(out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one(tmp_path):
    out = str(tmp_path / "reduced.safetensors")
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(2, init, out), nprocs=2, join=True)
    reduced, single = NeuronStats.load(out), shard_stats(range(6))
    assert torch.equal(reduced.fires, single.fires) and torch.equal(reduced.tokens, single.tokens)
    # float64 totals of the same six float32 shard sums, added in another order
    torch.testing.assert_close(reduced.sum, single.sum, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(reduced.sumsq, single.sumsq, rtol=1e-12, atol=1e-12)


def test_all_reduce_without_a_process_group_says_so():
    with pytest.raises(RuntimeError, match="init_process_group"):
        shard_stats([0]).all_reduce()

