"""The ``mbyn`` command line: ``main`` (in ``mbyn.cli.main``) and one module per command group."""
