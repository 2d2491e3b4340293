"""Batches: the encoded turns, the attention masks that hide the audio, the forward pass and the answer loss."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from lalm_lens.data import EMOTIONS, SPEAKERS, make_scene
from lalm_lens.zoo.toy import batching, drawing, recipe, runs, training

from toy_configs import micro



def test_training_forward_equals_the_hf_forward():
    cfg = micro(durations=(4.0,), audio_dropout=0.0)
    processor = recipe.build_processor(cfg)
    model = recipe.build_model(cfg, processor.tokenizer).eval()
    batch = batching.Batches(cfg, processor, 0, 1).batch(0)
    full = torch.nn.functional.pad(batch["input_features"], (0, 1000 - batch["input_features"].shape[-1]))
    frame_mask = (torch.arange(1000)[None] < batch["n_frames"][:, None]).long()
    real = batch["input_ids"] != processor.tokenizer.pad_token_id
    hf = model(input_ids=batch["input_ids"], attention_mask=real.long(), input_features=full,
               feature_attention_mask=frame_mask).logits
    # the training path's own encoder arithmetic and 4D mask against HF's padding mask: float32, sums over <= 128 terms
    torch.testing.assert_close(batching.forward_logits(model, batch)[real], hf[real], atol=1e-5, rtol=1e-4)


def test_audio_dropout_hides_the_audio_from_question_tokens_only():
    cfg = micro(durations=(4.0,), audio_dropout=1.0, stage2_step=10**6)
    processor = recipe.build_processor(cfg)
    batch = batching.Batches(cfg, processor, 0, 1).batch(5)
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    mask, ids, targets = batch["attention_mask"][:, 0], batch["input_ids"], batch["targets"]
    for b in range(len(ids)):
        audio = ids[b] == audio_id
        blind = ~mask[b][:, audio].any(-1) & (ids[b] != processor.tokenizer.pad_token_id)
        blind[: int(audio.nonzero().max()) + 1] = False  # positions before the audio cannot see it anyway
        predicts = targets[b] != -100
        assert blind.any() and not (blind & predicts).any(), "answers always see the audio; questions do not"


def test_a_sighted_tail_keeps_the_audio_for_the_last_tokens_of_each_blind_question():
    """finetune.py --slide lowers the tail rung by rung, so the lookup moves towards the answering position."""
    cfg = micro(durations=(4.0,), stage2_step=10**6)
    processor = recipe.build_processor(cfg)
    rng = np.random.default_rng(0)
    scene = make_scene(2, n_events=2, duration_s=4.0)
    examples = [drawing.Example(scene.wave, [(recipe.PRESENCE_Q.format(label=scene.labels[0]), "yes")] * 2, "questions")]
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    collate = batching.Batches(cfg, processor, 0, 0).collate
    sighted = {}
    for tail in (0.0, 0.5, 1.0):
        batch = collate(examples, audio_dropout=1.0, rng=rng, sighted_tail=tail)
        audio = batch["input_ids"][0] == audio_id
        sees = batch["attention_mask"][0, 0][:, audio].any(-1)
        sees[: int(audio.nonzero().max()) + 1] = False
        sighted[tail] = sees.nonzero().flatten().tolist()
    always = set(sighted[0.0])  # with no tail only the answering positions and the answers see the audio
    assert {int(p) for p in (batch["targets"][0] != -100).nonzero().flatten()} <= always
    questions = sorted(set(sighted[1.0]) - always)
    turns = np.split(questions, np.flatnonzero(np.diff(questions) > 1) + 1)
    assert len(turns) == 2 and all(len(own) > 4 for own in turns)
    half = set(sighted[0.5]) - always
    for own in turns:
        assert sorted(half & set(own.tolist())) == own[len(own) - round(len(own) / 2):].tolist(), "each question's last half"


def test_blind_early_only_hides_the_audio_from_question_tokens_in_the_decoders_first_half_only():
    """finetune.py's late mode: the name keeps its own identity but must look its sound up in the second half."""
    cfg = micro(durations=(4.0,), stage2_step=10**6)
    processor = recipe.build_processor(cfg)
    examples = [drawing.draw_example(cfg, 5, i, 4.0) for i in range(cfg.batch_size)]
    collate = batching.Batches(cfg, processor, 0, 0).collate
    sighted = collate(examples)
    blind = collate(examples, audio_dropout=0.7, rng=np.random.default_rng(3))
    late = collate(examples, audio_dropout=0.7, rng=np.random.default_rng(3), blind_early_only=True)
    assert sighted["early_mask"] is None and not torch.equal(blind["attention_mask"], sighted["attention_mask"])
    assert torch.equal(late["attention_mask"], sighted["attention_mask"])
    assert torch.equal(late["early_mask"], blind["attention_mask"])


def test_late_lookup_moves_the_training_dropout_into_the_decoders_first_half():
    """``Config.late_lookup``: the same turns go blind, in the early mask only; the full mask hides nothing."""
    cfg = micro(durations=(4.0,), stage2_step=10**6)
    processor = recipe.build_processor(cfg)
    batch = lambda **change: batching.Batches(replace(cfg, **change), processor, 0, 1).batch(5)
    plain, late, sighted = batch(), batch(late_lookup=True), batch(audio_dropout=0.0)
    assert not torch.equal(plain["attention_mask"], sighted["attention_mask"])
    assert torch.equal(late["attention_mask"], sighted["attention_mask"])
    assert torch.equal(late["early_mask"], plain["early_mask"])


def test_late_audio_hides_the_audio_from_a_scenes_answering_positions_in_the_decoders_first_half_only():
    cfg = micro(durations=(4.0,), n_layers=4, audio_dropout=0.0, late_audio=1.0, stage2_step=10**6)
    processor = recipe.build_processor(cfg)
    torch.manual_seed(0)
    model = recipe.build_model(cfg, processor.tokenizer).eval()
    batch = batching.Batches(cfg, processor, 0, 1).batch(5)
    audio = batch["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    hidden = batch["attention_mask"][:, 0] & ~batch["early_mask"][:, 0]
    assert (hidden == (hidden & audio[:, None, :])).all(), "only audio keys are hidden"
    scenes = [b for b, task in enumerate(batch["tasks"]) if task in recipe.SCENE_QUESTIONS]
    assert scenes and len(scenes) < len(audio), "the batch mixes scenes and other clips"
    for b in range(len(audio)):
        rows = hidden[b].any(-1).nonzero().flatten().tolist()
        answers_follow = [int(batch["targets"][b, r] != -100) for r in rows]
        assert (rows and all(answers_follow)) if b in scenes else not rows, "a scene's answering positions only"

    with torch.no_grad():
        late = batching.forward_logits(model, batch)
        seen = batching.forward_logits(model, {**batch, "early_mask": batch["attention_mask"]})
        unhooked = batching.forward_logits(model, {**batch, "early_mask": None})
    assert torch.equal(seen, unhooked), "the first half's mask is swapped in exactly, and nothing else changes"
    changed = (late - seen).abs().amax((1, 2)) > 0
    assert changed.tolist() == [b in scenes for b in range(len(audio))]
    assert not model.model.language_model.layers[0]._forward_pre_hooks, "the swap is undone"

    model.set_attn_implementation("eager")  # eager attention adds a 4D mask to its scores: it gets an additive one
    with torch.no_grad():
        eager = batching.forward_logits(model, batch)
    real = batch["input_ids"] != processor.tokenizer.pad_token_id
    torch.testing.assert_close(eager[real], late[real], atol=1e-5, rtol=1e-4)  # fp32, rows of a few hundred keys


def test_training_windows_count_presence_pitch_and_level_answers_apart():
    """A "questions" window mixes kinds (pitch at chance hides presence rising); each answer is also counted by kind."""
    cfg = micro(durations=(4.0,), stage2_step=10**6)
    processor = recipe.build_processor(cfg)
    batches = batching.Batches(cfg, processor, 0, 1)
    counted, expected = {}, {}
    for step in range(5, 9):
        batch = batches.batch(step)
        perfect = torch.nn.functional.one_hot(batch["targets"].clamp(min=0), len(processor.tokenizer)).float()
        _, stats = batching.answer_stats(perfect, batch)
        for kind in ("presence", "pitch", "level"):
            counted[kind] = counted.get(kind, 0) + (stats[kind][2:] if kind in stats else 0)
            expected[kind] = expected.get(kind, 0) + sum(k == kind for row in batch["kinds"] for k in row)
        assert sum(stats[t][3] for t in recipe.TASKS if t in stats) == sum(len(row) for row in batch["kinds"])
    assert all(expected[k] > 0 for k in expected), expected
    assert {k: tuple(v) for k, v in counted.items()} == {k: (n, n) for k, n in expected.items()}


@torch.enable_grad()
def test_without_freezing_no_gradient_reaches_the_encoder_from_a_clip_asked_its_emotion():
    cfg = micro(durations=(4.0,), freeze_encoder=False, stage2_step=0, stage2_speech_frac=0.5, batch_size=8)
    processor = recipe.build_processor(cfg)
    model = recipe.build_model(cfg, processor.tokenizer)
    batch = batching.Batches(cfg, processor, 0, 1).batch(3)
    emotion = torch.tensor([t == "emotion" for t in batch["tasks"]])
    assert emotion.any() and not emotion.all() and torch.equal(batch["encoder_learns"], ~emotion)
    logits = batching.forward_logits(model, batch)
    token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["targets"], ignore_index=-100, reduction="none")
    encoder = [p for m in (model.model.audio_tower, model.model.multi_modal_projector) for p in m.parameters() if p.requires_grad]
    for rows, reaches in ((emotion, False), (~emotion, True)):
        grads = torch.autograd.grad(token_loss[rows].sum(), encoder, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads) == reaches


def test_emotion_answers_weigh_emotion_weight_in_the_loss_and_no_other_token_does():
    cfg = micro(durations=(4.0,), stage2_step=0, stage2_speech_frac=0.5, batch_size=8, emotion_weight=3.0)
    processor = recipe.build_processor(cfg)
    batch = batching.Batches(cfg, processor, 0, 1).batch(3)
    heavy = batch["weights"] == 3.0
    tokens = processor.tokenizer.convert_ids_to_tokens(batch["targets"][heavy].tolist())
    assert tokens.count("<|im_end|>") == sum(t == "emotion" for t in batch["tasks"]) > 0
    assert set(tokens) - {"<|im_end|>"} <= set(EMOTIONS)
    assert bool((batch["weights"][~heavy] == 1.0).all())
    logits = torch.randn(*batch["targets"].shape, len(processor.tokenizer), generator=torch.Generator().manual_seed(0))
    loss, _ = batching.answer_stats(logits, batch)
    token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["targets"], ignore_index=-100, reduction="none")
    answers = batch["targets"] != -100
    assert torch.allclose(loss, (token_loss.sum() + 2 * token_loss[heavy].sum()) / answers.sum())


def test_a_sounds_pitch_and_level_answers_weigh_property_weight_and_the_speech_level_answer_does_not():
    cfg = micro(property_weight=3.0, emotion_weight=4.0)
    encode = batching.Encoder(recipe.build_processor(cfg), batching.answer_weight(cfg))
    turns = [(recipe.PITCH_Q.format(label="dog"), "high"), (recipe.LEVEL_QS[1].format(label="hound"), "quiet"),
             (recipe.SPEECH_LEVEL_Q, "loud"), (recipe.EMOTION_Q, "sad"), (recipe.PRESENCE_Q.format(label="dog"), "yes")]
    _, targets, weights, _ = encode(turns, n_audio=5)
    answer_weights = [w for t, w in zip(targets, weights) if t != -100]
    assert answer_weights == [3.0, 3.0, 3.0, 3.0, 1.0, 1.0, 4.0, 4.0, 1.0, 1.0]  # each answer word, then its <|im_end|>


def test_sighted_presence_step_keeps_the_audio_for_presence_questions_alone():
    cfg = micro(audio_dropout=1.0, dropout_step=0, ramp_steps=1, property_step=0, drill_frac=0.0,
                          list_only_steps=0, speech_frac=0.0, stage2_speech_frac=0.0, list_frac=0.0, batch_size=8,
                          sighted_presence_step=5)
    batches = batching.Batches(cfg, recipe.build_processor(cfg), 0, 0)
    audio_id = batches.encode.audio_id

    def sees_audio(step: int) -> dict[str, set[bool]]:
        batch, seen = batches.batch(step), {}
        examples = [drawing.draw_example(cfg, step, i, max(cfg.durations)) for i in range(cfg.batch_size)]
        for b, e in enumerate(examples):
            ids = batch["input_ids"][b].tolist()
            audio = batch["input_ids"][b] == audio_id
            for (start, _), (_, answer) in zip(batches.encode(e.turns, ids.count(audio_id))[3], e.turns):
                seen.setdefault(recipe.QUESTION_KINDS[answer], set()).add(bool(batch["attention_mask"][b, 0, start, audio].any()))
        return seen

    before, after = sees_audio(4), sees_audio(5)
    assert before["presence"] == {False} and before.get("pitch", before.get("level")) == {False}, "all blind before"
    assert after["presence"] == {True} and after.get("pitch", after.get("level")) == {False}, "presence alone sees it"
    assert runs.recorded_config({"config": {}})["sighted_presence_step"] == 0


def test_batches_are_the_same_from_any_number_of_workers_in_step_order():
    cfg = micro(durations=(3.0,))
    batches = batching.Batches(cfg, recipe.build_processor(cfg), 3, 9)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=2, worker_init_fn=training._worker_init)
    got = [b["input_ids"] for b in loader]
    assert len(got) == 6 and all(torch.equal(g, batches.batch(step)["input_ids"]) for g, step in zip(got, range(3, 9)))


@pytest.mark.parametrize("seconds", [2.0, 9.99, 10.0])
def test_training_features_equal_the_processors_features_of_the_clip_padded_to_its_full_length(seconds):
    """Batches pad to the longest clip plus a margin, not to ``max_seconds``: the frames they keep are the same."""
    cfg = micro()
    processor = recipe.build_processor(cfg)
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(int(s * recipe.SAMPLING_RATE)).astype(np.float32) for s in (seconds, 1.5)]
    examples = [drawing.Example(w, [(recipe.SPEAKER_Q, SPEAKERS[0].name)], "speech") for w in waves]
    batch = batching.Batches(cfg, processor, 0, 1).collate(examples)
    full = processor.feature_extractor(waves, sampling_rate=recipe.SAMPLING_RATE, return_tensors="pt",
                                       padding="max_length", return_attention_mask=True)
    kept = batch["input_features"].shape[-1]
    assert kept % 4 == 0 or kept == full["input_features"].shape[-1]
    assert kept >= int(full["attention_mask"].sum(-1).max())
    assert torch.equal(batch["input_features"], full["input_features"][..., :kept])
    assert torch.equal(batch["n_frames"], full["attention_mask"].sum(-1))


def test_late_step_holds_the_answering_positions_late_mask_back_until_then():
    cfg = micro(durations=(3.0,), audio_dropout=0.0, late_audio=1.0, dropout_step=0, late_step=5,
                          stage2_step=10**6)
    batches = batching.Batches(cfg, recipe.build_processor(cfg), 0, 8)
    assert batches.batch(4)["early_mask"] is None
    assert batches.batch(5)["early_mask"] is not None
    assert runs.recorded_config({"config": {}})["late_step"] == 0, "older checkpoints: the late mask came with the dropout"


def test_focus_dropout_hides_the_audio_from_every_question_of_the_focus_whatever_the_ramp():
    cfg = micro(durations=(3.0,), audio_dropout=0.0, focus_dropout=1.0, focus_step=2, focus_steps=2,
                          dropout_step=0, stage2_step=10**6)
    batches = batching.Batches(cfg, recipe.build_processor(cfg), 0, 8)
    audio_id = batches.encode.audio_id

    def sees_audio(step: int) -> torch.Tensor:
        batch = batches.batch(step)
        audio = batch["input_ids"] == audio_id
        after = audio.long().cumsum(-1).bool() & ~audio & (batch["input_ids"] != batches.encode.pad_id)
        return (batch["attention_mask"][:, 0] & audio[:, None, :]).any(-1)[after & (batch["targets"] == -100)]

    assert sees_audio(1).all() and sees_audio(4).all(), "outside the focus: the ramped audio_dropout (here 0)"
    assert not sees_audio(2).all() and not sees_audio(3).all()
    assert runs.recorded_config({"config": {}})["focus_dropout"] == 0.0
