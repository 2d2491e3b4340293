"""What goes wrong in the list answers? (docs/toy_recipe.md, run K)

Asks a saved model "What sounds are in the audio?" about held-out three-event
6 s clips, as ``--evaluate`` does (greedy generation; half equal-layout, half
random-layout), and sorts the answers that are not exactly right: the right
classes in another order, a class missed, a class added, a class heard as
another. Prints the counts, then the same for clips whose events vary in pitch
and level as in training (quiet events 14 dB down).

    python docs/toy_recipe/list_errors.py RUN [N]
"""

import sys
from collections import Counter

from lalm_lens import HookedLALM
from lalm_lens.zoo.toy import evaluation, recipe


def kind(truth: list[str], answer: list[str]) -> str:
    if answer == truth:
        return "right"
    if sorted(answer) == sorted(truth):
        return "right classes, other order"
    if len(answer) < len(truth) and set(answer) <= set(truth):
        return "a class missed"
    if len(answer) > len(truth) and set(truth) <= set(answer):
        return "a class added"
    if len(answer) == len(truth):
        return "a class heard as another"
    return "other"


def main(run: str, n: int = 200) -> None:
    model = HookedLALM.from_pretrained(run)
    for properties in (False, True):
        scenes = evaluation.heldout_mix(n, properties=properties)
        answers = evaluation.greedy_answers(model, [s.wave for s in scenes], [recipe.LIST_Q] * n, 32)
        counts = Counter(kind(s.labels, a.split(", ")) for s, a in zip(scenes, answers))
        print(f"{run}, {n} clips, {'pitch and level varied' if properties else 'as --evaluate'}:")
        for k, c in counts.most_common():
            print(f"  {k}: {c} ({100 * c / n:.1f} %)")


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
