"""Configs the toy's tests are written against: run R's, and the micro config with run R's mechanisms."""

from lalm_lens.zoo.toy import recipe

# The tests of single mechanisms were written against run R's settings (the defaults before the pick-out recipe):
# each switches on only what it tests. R_MECHANISMS leaves the micro config's short schedule alone.
R_MECHANISMS = dict(focus_step=2800, focus_steps=400, focus_frac=1.0, focus_dropout=0.0, focus_frozen=False,
                    ladder_steps=150, emotion_weight=4.0, property_weight=1.0, drill_frac=0.3, pick_frac=0.0,
                    pick_questions=1, sighted_presence_step=0, name_step=0, audio_dropout=0.8, late_step=0)
R_SCHEDULE = dict(steps=9500, stage2_step=4000, ramp_steps=800, property_step=2800, phrase_step=3600)


def run_r(**changes) -> recipe.Config:
    """Run R's config with ``changes``."""
    return recipe.Config(**{**R_SCHEDULE, **R_MECHANISMS, **changes})


def micro(**changes) -> recipe.Config:
    """The micro config with run R's mechanisms and ``changes``."""
    return recipe.Config.micro(**{**R_MECHANISMS, **changes})
