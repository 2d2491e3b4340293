"""How ``lalm-toy`` is made, one module per idea; ``python -m lalm_lens.zoo.train_toy`` is its command line.

- :mod:`~lalm_lens.zoo.toy.recipe`: the ``Config``, the questions, the processor and the model
- :mod:`~lalm_lens.zoo.toy.drawing`: training examples, a clip and a conversation about it, drawn from the seed and step
- :mod:`~lalm_lens.zoo.toy.batching`: examples encoded and collated into batches, the forward pass and the answer loss
- :mod:`~lalm_lens.zoo.toy.runs`: what a run recorded (its config, checkpoint weights, the runs it continues), read back
- :mod:`~lalm_lens.zoo.toy.evaluation`: held-out clips, ``--evaluate``, ``--quick-look`` and the results tables
- :mod:`~lalm_lens.zoo.toy.model_card`: ``MODEL_CARD.md`` from a model's training log and held-out results
- :mod:`~lalm_lens.zoo.toy.training`: the training loop, checkpoints, and retraining a model made by several runs

Each module imports only modules listed above it.
"""
