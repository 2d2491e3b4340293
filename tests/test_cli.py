"""`lalm-lens hooks MODEL`: the first thing a new user runs; a user's mistake gets one line, not a traceback."""

import re
import tempfile

import pytest

from lalm_lens import cli
from lalm_lens.cli import main


@pytest.fixture(autouse=True)
def tiny_cache(tmp_path_factory, monkeypatch):
    """Tiny checkpoints are built once per test session into a temporary cache, not into ~/.cache."""
    monkeypatch.setenv("LALM_LENS_CACHE", str(tmp_path_factory.getbasetemp() / "lalm_lens_cache"))


def test_hooks_lists_every_hook_with_its_shape(checkpoint, capsys):
    assert main(["hooks", str(checkpoint("qwen2_audio")), "--seconds", "2"]) == 0
    out = capsys.readouterr().out
    assert "blocks.1.attn.hook_pattern" in out and "hook_audio_embeds" in out
    shapes = dict(line.split(None, 1) for line in out.splitlines()[2:])
    assert f"{len(shapes)} hook points for one 2 s clip" in out
    assert shapes["audio.blocks.0.mlp.hook_post"] == "[1, 1500, 256]"
    assert shapes["blocks.0.mlp.hook_gate"] == "[1, 76, 192]", "50 audio tokens for 2 s + 26 prompt tokens"


def test_hooks_shows_the_omni_encoder_pattern_per_chunk(capsys):
    assert main(["hooks", "tiny-qwen2.5-omni-thinker", "--seconds", "3"]) == 0
    shapes = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines()[2:])
    assert shapes["audio.blocks.0.attn.hook_pattern"] == "[1, 2, 2, 100, 100]", "[clip, chunk, head, q, k]: 3 s = 2 chunks"
    assert shapes["audio.blocks.0.hook_resid_post"] == "[1, 150, 64]"


def test_hooks_on_kimi_audio_takes_the_prompt_as_token_ids(capsys):
    assert main(["hooks", "tiny-kimi-audio", "--seconds", "1", "--prompt-ids", "11,12,13"]) == 0
    out = capsys.readouterr().out
    assert "prompt [11, 12, 13]" in out and "mimo.blocks.0.hook_resid_post" in out


def test_a_tiny_name_leaves_no_temporary_folder_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["hooks", "tiny-qwen2-audio", "--seconds", "1"]) == 0
    assert main(["hooks", "tiny-qwen2-audio", "--seconds", "1"]) == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["hooks", "no/such/folder"], "no/such/folder"),
        (["hooks", "tiny-qwen2-audio", "--seconds", "31"], r"31 s long .* at most 30 s"),
        (["hooks", "tiny-qwen2-audio", "--seconds", "0.01"], "needs at least 2"),
        (["demo", "--model", "tiny-qwen2-audio", "--seconds", "-1"], "too short"),
    ],
    ids=["missing_checkpoint", "clip_too_long", "clip_too_short", "bad_scene"],
)
def test_a_users_mistake_prints_one_error_line_and_exits_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("lalm-lens: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.search(message, errors[0]), err


def test_debug_shows_the_traceback_of_a_users_mistake():
    with pytest.raises(OSError, match="no/such/folder"):
        main(["--debug", "hooks", "no/such/folder"])


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in lalm-lens")

    monkeypatch.setattr(cli, "hook_shapes", broken)
    with pytest.raises(RuntimeError, match="a bug in lalm-lens"):
        main(["hooks", "tiny-qwen2-audio", "--seconds", "1"])


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
