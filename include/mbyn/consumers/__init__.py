"""Consumers: one module per consumer group. Each module declares ``OPTIONS`` and defines
``run(settings, args)``; the consumers themselves (name, module, topics, default copies) are declared in
``mbyn.workers``."""
