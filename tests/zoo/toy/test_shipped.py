"""The shipped toy model, loaded by name as a user loads it: its documented shape, its vocabulary, its answers."""

import json

import torch
from transformers import Qwen2AudioForConditionalGeneration

from lalm_lens.data import EVENT_CLASSES, make_scene, make_utterance
from lalm_lens.zoo import SHIPPED
from lalm_lens.zoo.toy import drawing, evaluation, recipe

SCENE_SEED, SPEECH_SEED = evaluation.heldout_seed(7), evaluation.heldout_seed(11)


def shipped_recipe() -> dict:
    """The training config the shipped weights were made with (from their training log)."""
    return json.loads(SHIPPED["lalm-toy"].joinpath("training_log.json").read_text())["config"]


def test_loads_by_name_with_the_documented_config(toy):
    cfg, default = toy.cfg, recipe.Config(**{k: v for k, v in shipped_recipe().items() if k in recipe.Config.__dataclass_fields__})
    assert cfg.arch == "qwen2_audio" and isinstance(toy.hf_model, Qwen2AudioForConditionalGeneration)
    assert (cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.n_kv_heads) == (
        default.n_layers, default.d_model, default.d_mlp, default.n_heads, default.n_kv_heads)
    assert (cfg.audio_n_layers, cfg.audio_d_model, cfg.audio_n_heads) == (default.audio_layers, default.d_audio, default.audio_heads)
    assert cfg.max_audio_seconds == 10 and toy.processor.feature_extractor.feature_size == default.n_mels
    assert toy.hf_model.config.audio_config.max_source_positions == 500
    assert next(toy.hf_model.parameters()).dtype == torch.float32
    assert SHIPPED["lalm-toy"].joinpath("model.safetensors").stat().st_size < 20e6


def test_vocabulary_covers_every_prompt_and_answer(toy):
    texts = [recipe.LIST_Q, recipe.EMOTION_Q, *(recipe.PRESENCE_Q.format(label=c) for c in EVENT_CLASSES),
             drawing.list_answer(list(EVENT_CLASSES)), "yes no neutral happy angry sad"]
    if "stage2_step" in shipped_recipe():  # the second recipe's questions and paraphrases
        phrases = [*EVENT_CLASSES, *(p for ps in recipe.PHRASES.values() for p in ps)]
        templates = [*recipe.PRESENCE_QS, *recipe.PITCH_QS, *recipe.LEVEL_QS]
        texts += [recipe.SPEAKER_Q, recipe.SPEECH_LEVEL_Q, *(t.format(label=p) for t in templates for p in phrases),
                  "high low loud quiet m1 f4"]
    for text in texts + [t.upper() for t in texts]:
        assert toy.tokenizer.unk_token_id not in toy.tokenizer(text)["input_ids"], text
    assert toy.tokenizer.decode(toy.to_tokens("dog, bell, rain")) == "dog, bell, rain"


def test_answers_each_task_on_fixed_held_out_examples(toy):
    scene = make_scene(SCENE_SEED, n_events=3, layout="equal")
    absent = next(c for c in EVENT_CLASSES if c not in scene.labels)
    speech = make_utterance("angry", "f2", SPEECH_SEED)
    prompts = [recipe.LIST_Q, recipe.PRESENCE_Q.format(label=scene.labels[1]), recipe.PRESENCE_Q.format(label=absent), recipe.EMOTION_Q]
    batch = toy.prepare([scene.wave, scene.wave, scene.wave, speech.wave], prompts, sampling_rate=16000)
    assert toy.generate(batch, max_new_tokens=8) == [drawing.list_answer(scene.labels), "yes", "no", "angry"]
