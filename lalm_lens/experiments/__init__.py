"""Studies built from the library's hooks and analyses: one module per study, each with ``run(...)`` and ``main(argv)``."""
