"""The toy "shapes & tones" world, its tasks, analysers, demo and benchmark.

- :mod:`codi2.toy.world` — the procedural world (images, tones, captions, the cross-modal rule);
- :mod:`codi2.toy.tasks` — every CoDi-2 task as a generator of samples with ground truth;
- :mod:`codi2.toy.analysers` — deterministic readers of images and audio (no learned judge);
- :mod:`codi2.toy.demo` — ``codi2 demo``: an HTML gallery of the model on every task;
- :mod:`codi2.toy.bench` — ``codi2 bench toy``: accuracy per task, seen vs held-out, baselines;
- :mod:`codi2.toy.commands` — the argparse wiring of those two commands.

The world's definition is written down in ``docs/toy-world.md``. Importing this package
imports no torch (numpy only).
"""
