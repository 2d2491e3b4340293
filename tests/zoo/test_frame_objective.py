"""The toy encoder's frame objective: each audio token's event class, pitch and level, read by linear heads."""

import numpy as np
import torch

from lalm_lens.adapters.base import tokens_after_whisper
from lalm_lens.data import EVENT_CLASSES, LEVELS, PITCHES
from lalm_lens.data.scenes import EventInterval
from lalm_lens.zoo.frame_objective import KINDS, NONE, FrameHeads, frame_loss, frame_targets
from lalm_lens.zoo.toy import batching, recipe

TOKEN_S = 0.04  # 160-sample hop at 16 kHz, conv stride 2, pooling 2


def test_each_token_gets_the_event_sounding_at_its_centre_and_speech_gets_none():
    events = [EventInterval("dog", 0.0, 1.0, "high", "loud"), EventInterval("bell", 1.5, 2.0)]
    targets = frame_targets([events, ()], [60, 5], TOKEN_S)
    assert targets.shape == (65, 3)
    dog, gap, bell, after = targets[:25], targets[25:37], targets[37:50], targets[50:60]
    assert (dog == torch.tensor([EVENT_CLASSES.index("dog"), PITCHES.index("high"), LEVELS.index("loud")])).all()
    assert (bell[:, 0] == EVENT_CLASSES.index("bell")).all() and (bell[:, 1:] == -100).all(), "plain event: class only"
    assert (gap[:, 0] == NONE).all() and (after[:, 0] == NONE).all() and (gap[:, 1:] == -100).all()
    assert (targets[60:] == -100).all(), "a clip without events (speech) is not asked"


def test_training_batches_carry_targets_aligned_with_the_audio_tokens():
    cfg = recipe.Config.micro(durations=(4.0,), batch_size=8, stage2_speech_frac=0.5, stage2_step=0)
    batch = batching.Batches(cfg, recipe.build_processor(cfg), 0, 1).batch(5)
    n_tokens = tokens_after_whisper(batch["n_frames"])
    assert batch["frame_targets"].shape == (int(n_tokens.sum()), 3)
    per_clip = batch["frame_targets"].split(n_tokens.tolist())
    for task, targets in zip(batch["tasks"], per_clip):
        assert bool((targets[:, 0] != -100).all()) == (task in ("list", "questions", "drill"))


def test_heads_learn_a_separable_target_and_ignored_tokens_cost_nothing():
    torch.manual_seed(0)
    audio = torch.randn(200, 16)
    targets = torch.stack([(audio[:, 0] > 0).long(), (audio[:, 1] > 0).long(), torch.full((200,), -100)], dim=-1)
    heads = FrameHeads(16)
    optimizer = torch.optim.Adam(heads.parameters(), lr=0.05)
    with torch.enable_grad():
        for _ in range(200):
            loss, stats = frame_loss(heads, audio, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert set(stats) == set(KINDS[:2]), "the level target is absent from every token"
    for kind in KINDS[:2]:
        assert stats[kind][2] / stats[kind][3] > 0.95
    assert np.isclose(float(loss), sum(s[0] for s in stats.values()) / len(KINDS), rtol=1e-4)
