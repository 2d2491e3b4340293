"""`lalm-lens hooks MODEL`: the first thing a new user runs."""

from lalm_lens.cli import main


def test_hooks_lists_every_hook_with_its_shape(checkpoint, capsys):
    assert main(["hooks", str(checkpoint("qwen2_audio")), "--seconds", "2"]) == 0
    out = capsys.readouterr().out
    assert "35 hook points" in out
    assert "blocks.1.attn.hook_pattern" in out and "hook_audio_embeds" in out
    shapes = dict(line.split(None, 1) for line in out.splitlines()[2:])
    assert shapes["audio.blocks.0.mlp.hook_post"] == "[1, 1500, 256]"
    assert shapes["blocks.0.mlp.hook_gate"] == "[1, 76, 192]", "50 audio tokens for 2 s + 26 prompt tokens"


def test_hooks_shows_the_omni_encoder_pattern_per_chunk(capsys):
    assert main(["hooks", "tiny-qwen2.5-omni-thinker", "--seconds", "3"]) == 0
    shapes = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines()[2:])
    assert shapes["audio.blocks.0.attn.hook_pattern"] == "[1, 2, 2, 100, 100]", "[clip, chunk, head, q, k]: 3 s = 2 chunks"
    assert shapes["audio.blocks.0.hook_resid_post"] == "[1, 150, 64]"


def test_demo_answers_and_writes_the_attention_plot(checkpoint, tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--model", str(checkpoint("qwen2_audio")), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the clip:" in printed and "A: " in printed
    assert out.stat().st_size > 10_000


def test_demo_runs_on_the_shipped_toy_by_default(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo.png")]) == 0
    printed = capsys.readouterr().out
    clip = printed.split("the clip: ")[1].splitlines()[0]
    labels = [event.split()[0] for event in clip.split(", ")]
    assert f"A: {', '.join(labels)}" in printed
