"""Producers: one module per source. Each module declares ``OPTIONS`` and defines ``run(settings, args)``.

The producers themselves (name, module, topics, default copies) are declared in ``mbyn.workers``; batch
producers also expose a plain function that Airflow tasks call (see each module).
"""
