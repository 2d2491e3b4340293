"""Hook names are built and parsed in one place."""

import pytest

from lalm_lens import names


def test_build_and_parse_round_trip():
    assert names.decoder(3, "mlp.hook_gate") == "blocks.3.mlp.hook_gate"
    assert names.encoder(0, "attn.hook_pattern") == "audio.blocks.0.attn.hook_pattern"
    assert names.parse("audio.blocks.12.mlp.hook_post") == ("encoder", 12, "mlp.hook_post")
    assert names.parse("mimo.blocks.1.hook_resid_post") == ("mimo", 1, "hook_resid_post")
    assert names.parse("blocks.2.attn.hook_z") == ("decoder", 2, "attn.hook_z")
    assert names.parse("ln_final.hook_scale") == (None, None, "ln_final.hook_scale")


def test_layer_of_a_name_outside_blocks_raises():
    assert names.layer_of("blocks.7.hook_resid_pre") == 7
    with pytest.raises(ValueError, match="no layer"):
        names.layer_of("hook_audio_embeds")
    with pytest.raises(ValueError, match="unknown stack"):
        names.block("vision", 0, "hook_resid_pre")


def test_audio_names():
    assert names.is_audio("audio.hook_out") and names.is_audio("hook_audio_embeds")
    assert not names.is_audio("blocks.0.hook_resid_post")
