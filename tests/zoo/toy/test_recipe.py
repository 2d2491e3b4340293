"""The recipe: its settings, and its questions counted in the toy tokenizer's tokens."""

import dataclasses

from lalm_lens.zoo.toy import recipe

from toy_configs import micro


def test_n_tokens_counts_as_the_toys_tokenizer_splits_every_question():
    tokenizer = recipe.build_processor(micro()).tokenizer
    for template in (*recipe.PRESENCE_QS, *recipe.PITCH_QS, *recipe.LEVEL_QS, recipe.LIST_Q, recipe.EMOTION_Q):
        for text in (template.format(label="dog that barks"), template.split("{label}")[-1]):
            assert recipe.n_tokens(text) == len(tokenizer(text, add_special_tokens=False)["input_ids"]), text


def test_every_setting_is_described_in_the_configs_docstring():
    undocumented = [f.name for f in dataclasses.fields(recipe.Config) if f"``{f.name}``" not in recipe.Config.__doc__]
    assert not undocumented
