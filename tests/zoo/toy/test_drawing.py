"""Training examples: which questions each step's clips are asked, and of which sounds."""

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from lalm_lens.data import EVENT_CLASSES, LEVELS, PITCHES
from lalm_lens.zoo.toy import batching, drawing, evaluation, recipe, runs

from toy_configs import run_r



def test_the_curriculum_asks_presence_first_then_properties_and_paraphrases_and_hides_the_audio_gradually():
    cfg = run_r()
    properties = {q for q in (*recipe.PITCH_QS, *recipe.LEVEL_QS)}

    def questions(step):
        return [q for i in range(32) for q, _ in drawing.draw_example(cfg, step, i, 6.0).turns]

    early, late = questions(cfg.property_step - 1), questions(cfg.property_step + cfg.ramp_steps)
    assert not any(" high or low" in q or " loud or quiet" in q for q in early if q != recipe.SPEECH_LEVEL_Q)
    assert any(q in {t.format(label=c) for t in properties for c in EVENT_CLASSES} for q in late)
    speech_or_list = {recipe.LIST_Q, recipe.EMOTION_Q, recipe.SPEAKER_Q, recipe.SPEECH_LEVEL_Q, recipe.SYLLABLES_Q}
    class_word = {t.format(label=c) for t in (recipe.PRESENCE_Q, recipe.PITCH_Q, recipe.LEVEL_Q) for c in EVENT_CLASSES}
    unphrased, phrased = questions(cfg.phrase_step - 1), questions(cfg.phrase_step + cfg.ramp_steps)
    assert all(q in class_word for q in unphrased if q not in speech_or_list), "no paraphrase before phrase_step"
    assert any(q not in class_word for q in phrased if q not in speech_or_list)
    assert drawing.ramp(cfg.dropout_step - 1, cfg.dropout_step, cfg.ramp_steps) == 0.0
    assert drawing.ramp(cfg.dropout_step + cfg.ramp_steps // 2 - 1, cfg.dropout_step, cfg.ramp_steps) == 0.5
    assert drawing.ramp(cfg.dropout_step + cfg.ramp_steps, cfg.dropout_step, cfg.ramp_steps) == 1.0
    processor = recipe.build_processor(cfg)
    batch = batching.Batches(cfg, processor, 0, 1).batch(cfg.dropout_step - 1)
    audio_id, pad_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>"), processor.tokenizer.pad_token_id
    for mask, ids in zip(batch["attention_mask"][:, 0], batch["input_ids"]):
        audio = ids == audio_id
        after = (torch.arange(len(ids)) > audio.nonzero().max()) & (ids != pad_id)
        assert bool(mask[after][:, audio].all()), "before the ramp no question loses the audio"


@pytest.fixture
def draw_with_scene(monkeypatch):
    """``draw(cfg, step, i)``: the training example and the keyword arguments of its ``make_scene`` call (None for speech)."""
    called = {}
    make_scene = drawing.make_scene
    monkeypatch.setattr(drawing, "make_scene", lambda seed, **k: called.update(scene=k) or make_scene(seed, **k))

    def draw(cfg, step, i):
        called.clear()
        return drawing.draw_example(cfg, step, i, 4.0), called.get("scene")

    return draw


def test_the_ladder_asks_one_pitch_question_of_one_event_then_of_one_or_two_then_drills(draw_with_scene):
    cfg = run_r(ladder_steps=50)

    def draw(step):
        return [(e, k["n_events"]) for e, k in (draw_with_scene(cfg, step, i) for i in range(24)) if e.task != "speech"]

    for step, events in ((cfg.focus_step, {1}), (cfg.focus_step + 99, {1, 2})):
        scenes = draw(step)
        n_events = {n for _, n in scenes}
        assert {e.task for e, _ in scenes} == {"drill"} and n_events == events, (step, n_events)
        assert all(len(e.turns) == 1 and e.turns[0][1] in PITCHES for e, _ in scenes)
    scenes = draw(cfg.focus_step + 100)
    assert {e.task for e, _ in scenes} == {"drill"} and max(len(e.turns) for e, _ in scenes) > 1, "then the drills"
    assert drawing.ladder_rung(run_r(ladder_steps=0), cfg.focus_step) == 0, "off with 0"


def test_pitch_frac_makes_that_share_of_the_scenes_one_pitch_question_about_one_event_after_the_focus(draw_with_scene):
    def easy(e):
        return e.task == "drill" and len(e.turns) == 1 and e.turns[0][1] in PITCHES

    cfg, off = run_r(pitch_frac=0.5), run_r()
    after = cfg.focus_step + cfg.focus_steps
    scenes = [(e, k["n_events"]) for e, k in (draw_with_scene(cfg, after, i) for i in range(200)) if e.task != "speech"]
    share = sum(easy(e) for e, _ in scenes) / len(scenes)
    assert abs(share - 0.5) < 3 * (0.25 / len(scenes)) ** 0.5, share
    assert {n for e, n in scenes if easy(e)} == {1}
    for i in range(50):
        e, e_off = drawing.draw_example(cfg, cfg.property_step - 1, i, 4.0), drawing.draw_example(off, cfg.property_step - 1, i, 4.0)
        assert e.turns == e_off.turns and (e.wave == e_off.wave).all(), "nothing changes before the properties"
    assert not any(easy(drawing.draw_example(off, after, i, 4.0)) for i in range(200)), "off by default"


def test_plain_frac_draws_list_and_presence_scenes_as_the_library_does_and_asks_them_no_property(draw_with_scene):
    cfg = run_r(plain_frac=1.0)
    step = cfg.focus_step + cfg.focus_steps
    scenes = [(e, k) for e, k in (draw_with_scene(cfg, step, i) for i in range(64)) if e.task != "speech"]
    assert {e.task for e, _ in scenes} == {"list", "questions", "drill"}
    for e, scene in scenes:
        assert scene["properties"] == (e.task == "drill"), "drills need labelled pitch and level"
        if e.task == "questions":
            assert all(answer in ("yes", "no") for _, answer in e.turns)


@pytest.mark.parametrize("answers, first, balanced_level", [(PITCHES, "high", False), (LEVELS, "loud", True)])
def test_property_answers_in_training_are_balanced(answers, first, balanced_level):
    """The questions' random choices come from another stream than the clip's: with one shared stream, 31 %
    of the pitch answers were "high" (a clip's labels followed from its task, length and layout). A clip's
    loudest sound is always loud; with ``balanced_level``, level is asked only of clips with a quiet sound too,
    half the time of those."""
    cfg = run_r(balanced_level=balanced_level)
    given = [a for i in range(400) for _, a in drawing.draw_example(cfg, 5000, i, 6.0).turns if a in answers]
    n = given.count(first)
    assert len(given) > 100
    assert abs(n - len(given) / 2) < 3 * (len(given) / 4) ** 0.5, f"{n} of {len(given)} answers are {first!r}"


def test_no_clip_is_asked_the_same_question_twice_and_drills_ask_properties_of_one_or_two_sounds():
    """A repeated question can be answered by copying the first answer, without listening."""
    cfg = run_r()
    examples = [drawing.draw_example(cfg, step, i, 6.0) for step in (cfg.property_step - 1, 5000) for i in range(200)]
    for e in examples:
        questions = [q for q, _ in e.turns]
        assert len(questions) == len(set(questions)), e.turns
    drills = [e for e in examples if e.task == "drill"]
    asked = drills + [e for e in examples[200:] if e.task == "questions"]
    spread = 3 * (len(asked) * cfg.drill_frac * (1 - cfg.drill_frac)) ** 0.5
    assert abs(len(drills) - cfg.drill_frac * len(asked)) < spread, "drill_frac of the question scenes (3 sigma)"
    assert all(a in (*PITCHES, *LEVELS) for e in drills for _, a in e.turns)
    assert {len(e.turns) for e in drills} == {2, 4}, "both properties of one sound, or of two"
    assert not any(e.task == "drill" for e in examples[:200]), "drills begin with the property questions"
    focus = [drawing.draw_example(cfg, cfg.focus_step, i, 6.0).task for i in range(64)]
    assert set(focus) == {"drill", "speech"}, "while the focus lasts, every scene is a drill"


def test_contrast_drills_ask_of_one_sound_that_every_other_sound_of_the_clip_differs_from():
    """A class-blind average of the clip answers these wrongly or at chance, so only picking out the named sound pays."""
    cfg = run_r(contrast=0.6, drill_frac=0.5)  # run S's
    drills = [e for e in (drawing.draw_example(cfg, 5000, i, 6.0) for i in range(300)) if e.task == "drill"]
    contrasts = [e for e in drills if len(e.events) > 1 and len(e.turns) == 2]  # other drills ask of every sound
    share = len(contrasts) / len(drills)
    assert abs(share - cfg.contrast) < 3 * (cfg.contrast * (1 - cfg.contrast) / len(drills)) ** 0.5, share
    assert {len(e.events) for e in contrasts} == {2, 3}
    for e in contrasts:
        odd = [ev for ev in e.events if all(o.pitch != ev.pitch and o.level != ev.level for o in e.events if o is not ev)]
        assert sorted(a for _, a in e.turns) in [sorted([ev.pitch, ev.level]) for ev in odd], e
    scene, event = evaluation.contrast_scene(1, 3, np.random.default_rng(0))
    assert drawing.property_questions(event) == [(f"Is the {event.label} sound high or low?", event.pitch),
                                            (f"Is the {event.label} sound loud or quiet?", event.level)]
    drill = drawing.drill_about(scene, event, np.random.default_rng(0))
    assert drill.task == "drill" and sorted(drill.turns) == sorted(drawing.property_questions(event))
    assert runs.recorded_config({"config": {}})["contrast"] == 0.0, "older checkpoints had none"
    off = run_r()
    assert recipe.Config().contrast == 0.0, "off by default"
    same = [(drawing.draw_example(off, 5000, i, 6.0), drawing.draw_example(cfg, 5000, i, 6.0)) for i in range(60)]
    assert all(a.turns == b.turns and (a.wave == b.wave).all() for a, b in same if b.task != "drill"), "only drills change"
    with_ladder = run_r(contrast=0.6, drill_frac=0.5, pitch_frac=0.3)
    assert all(drawing.draw_example(with_ladder, 5000, i, 6.0) for i in range(200)), "one-event rungs are never contrast drills"
    assert not any(len(e.events) == 3 for e in (drawing.draw_example(off, 5000, i, 6.0) for i in range(300)) if e.task == "drill")


def test_pick_out_drills_ask_one_property_of_one_of_two_opposite_sounds_in_a_short_clip():
    """Each pick-out drill's two sounds differ in pitch and in level, so only picking out the named one scores."""
    cfg = run_r(pick_frac=1.0, drill_frac=0.5)
    drills = [e for e in (drawing.draw_example(cfg, 5000, i, 6.0) for i in range(300)) if e.task == "drill"]
    assert len(drills) > 25
    for e in drills:
        assert len(e.events) == 2 and len(e.wave) == recipe.PICK_SECONDS * recipe.SAMPLING_RATE and len(e.turns) == 1
        assert {ev.pitch for ev in e.events} == set(PITCHES) and {ev.level for ev in e.events} == set(LEVELS)
    answers = Counter(a for e in drills for _, a in e.turns)
    assert set(answers) == {*PITCHES, *LEVELS}, answers
    assert runs.recorded_config({"config": {}})["pick_frac"] == 0.0, "older checkpoints had none"
    off = run_r()
    assert recipe.Config().pick_frac == 1.0, "every drill is a pick-out drill in the shipped recipe"
    same = [(drawing.draw_example(off, 5000, i, 6.0), drawing.draw_example(cfg, 5000, i, 6.0)) for i in range(60)]
    assert all(a.turns == b.turns and (a.wave == b.wave).all() for a, b in same if b.task != "drill"), "only drills change"


def test_pick_questions_asks_pitch_and_level_each_of_either_sound():
    cfg = run_r(pick_frac=1.0, drill_frac=0.5, pick_questions=2)
    drills = [e for e in (drawing.draw_example(cfg, 5000, i, 6.0) for i in range(200)) if e.task == "drill"]
    for e in drills:
        assert sorted(a in PITCHES for _, a in e.turns) == [False, True], e.turns
    asked = Counter(next(ev.label for ev in e.events if ev.label in q) for e in drills for q, _ in e.turns
                    if sum(ev.label in q for ev in e.events) == 1)
    assert len(asked) > 4, "either sound of a clip may be asked"
    assert runs.recorded_config({"config": {}})["pick_questions"] == 1, "older runs asked one"


def test_wide_pick_step_gives_pick_out_drills_two_to_four_sounds_in_clips_of_the_usual_length():
    cfg = run_r(pick_frac=1.0, drill_frac=0.5, pick_questions=2, wide_pick_step=5000)
    before = [drawing.draw_example(cfg, 4999, i, 6.0) for i in range(120)]
    assert {len(e.events) for e in before if e.task == "drill"} == {2}, "pick-out drills as before until that step"
    drills = [e for e in (drawing.draw_example(cfg, 5000, i, 6.0) for i in range(300)) if e.task == "drill"]
    assert {len(e.events) for e in drills} == {2, 3, 4}
    assert all(len(e.wave) >= 4.0 * recipe.SAMPLING_RATE for e in drills), "clips of the usual length (4-6 s here)"
    for e in drills:
        assert {ev.pitch for ev in e.events} == set(PITCHES) and {ev.level for ev in e.events} == set(LEVELS)
    off = replace(cfg, wide_pick_step=0)
    same = [(drawing.draw_example(off, 4999, i, 6.0), b) for i, b in enumerate(before)]
    assert all(a.turns == b.turns and (a.wave == b.wave).all() for a, b in same), "before its step, as without it"
    assert runs.recorded_config({"config": {}})["wide_pick_step"] == 0


def test_name_step_asks_each_scene_the_class_word_of_one_of_its_sounds_and_draws_the_same_clips_and_other_turns():
    cfg, off = run_r(pick_frac=1.0, drill_frac=0.7, pick_questions=2, name_step=5000), run_r(pick_frac=1.0, drill_frac=0.7, pick_questions=2)
    for step in (4999, 5000):
        for i in range(60):
            e, e_off = drawing.draw_example(cfg, step, i, 6.0), drawing.draw_example(off, step, i, 6.0)
            assert (e.wave == e_off.wave).all() and e.task == e_off.task
            named = [(q, a) for q, a in e.turns if recipe.QUESTION_KINDS.get(a) == "name"]
            if step < cfg.name_step or e.task not in recipe.SCENE_QUESTIONS:
                assert e.turns == e_off.turns, "before its step, and outside the scene questions, nothing changes"
                continue
            assert [t for t in e.turns if t not in named] == e_off.turns, "the other turns are the run's without it"
            (question, label), = named
            assert label in {ev.label for ev in e.events} and question.startswith("What is the ")
    phrased = run_r(name_step=1, phrase_step=0, pick_frac=1.0)
    examples = [drawing.draw_example(phrased, 5000, i, 6.0) for i in range(200)]
    questions = {q for e in examples if e.task in recipe.SCENE_QUESTIONS for q, a in e.turns if recipe.QUESTION_KINDS.get(a) == "name"}
    assert all(q.startswith("What is the ") for q in questions)
    assert questions - {recipe.NAME_Q.format(label=c) for c in EVENT_CLASSES}, "sounds named by paraphrases too"
    assert runs.recorded_config({"config": {}})["name_step"] == 0


def test_balanced_clips_leave_picking_out_the_named_sound_as_the_only_way_to_score():
    """With ``balanced``, a clip of several sounds holds both answers of each property, and each question is asked
    so that the clip's majority answer is right half the time: neither the average nor its opposite pays."""
    cfg = run_r(balanced=True)
    examples = [drawing.draw_example(cfg, 5000 + i // 16, i % 16, 6.0) for i in range(800)]
    majority_right, asked = 0.0, 0
    for e in examples:
        properties = [a for _, a in e.turns if a in (*PITCHES, *LEVELS)]
        if e.task == "drill":
            assert 2 <= len(e.events) <= 4 and len(properties) == 2, e.turns
        if sum(a in PITCHES for a in properties) > 1 or sum(a in LEVELS for a in properties) > 1:
            raise AssertionError(f"a second question of a property could oppose the first: {e.turns}")
        if len(e.events) < 2 or not properties:
            continue
        for answer in properties:
            labels = [ev.pitch if answer in PITCHES else ev.level for ev in e.events]
            assert len(set(labels)) == 2, "a clip of several sounds holds both answers"
            (top, n_top), (_, n_other) = Counter(labels).most_common()
            majority_right += 0.5 if n_top == n_other else float(answer == top)
            asked += 1
    share = majority_right / asked
    assert abs(share - 0.5) < 3 * (0.25 / asked) ** 0.5, (share, asked)
    pitches, levels = drawing.balanced_properties(3, np.random.default_rng(0))
    assert sorted(Counter(pitches).values()) == sorted(Counter(levels).values()) == [1, 2]
    with pytest.raises(ValueError, match="at least two"):
        drawing.balanced_properties(1, np.random.default_rng(0))
    assert runs.recorded_config({"config": {}})["balanced"] is False, "older checkpoints had none"
    assert recipe.Config().balanced is False, "off by default"


def test_focus_frac_keeps_the_list_and_presence_in_the_focus_and_at_one_every_scene_is_a_drill():
    cfg = run_r(focus_step=2000, focus_steps=400, pick_frac=1.0, ladder_steps=0, property_step=2000)
    tasks = Counter(drawing.draw_example(replace(cfg, focus_frac=0.6), 2000 + i // 16, i % 16, 6.0).task for i in range(240))
    assert 0.5 < tasks["drill"] / (240 - tasks["speech"]) < 0.85 and tasks["list"] and tasks["questions"]
    whole = [drawing.draw_example(cfg, 2000 + i // 16, i % 16, 6.0) for i in range(32)]
    assert {e.task for e in whole} <= {"drill", "speech"}
    assert runs.recorded_config({"config": {}})["focus_frac"] == 1.0
