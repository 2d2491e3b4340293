"""Where does a run look the asked sound up? (docs/toy_recipe.md, runs T and U)

``--evaluate``'s retrieval diagnostic alone, on held-out equal-layout three-event clips: accuracy
(%) of the first answer token of presence ("yes" and "no"), pitch and loudness questions with the
attention to the audio cut for the last prompt position at one layer (``last_at``) or from one
layer on (``last_from``), and for every position after the audio from one layer on
(``prompt_from``); see :func:`lalm_lens.zoo.diagnostics.retrieval`. The model card's table, in a few
minutes, where ``--evaluate`` takes much longer.

    python docs/toy_recipe/retrieval.py RUN   # a run, its checkpoint, or a saved model
"""

import sys

import torch

from lalm_lens.zoo.toy import evaluation

N_CLIPS = 64


def main(run: str) -> None:
    torch.set_num_threads(2)
    model = evaluation.load_hooked(run)
    result = evaluation.retrieval_diagnostic(model, evaluation.heldout_scenes(N_CLIPS, "equal", 400_000, properties=True), 32)
    print(run)
    print("\n".join(evaluation.retrieval_table(result)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: retrieval.py RUN")
    main(sys.argv[1])
