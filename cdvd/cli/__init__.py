"""The console scripts: one thin module each (Hydra's ``main``), none importing another.

Each runs through :func:`cdvd.cli.common.run_hydra` (Hydra's errors as one line) and calls the library through
:func:`cdvd.cli.common.run_cli`: every :class:`cdvd.errors.UserError` becomes one line on stderr and exit code 2.
"""
