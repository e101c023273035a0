"""The console scripts: one thin module each (Hydra's ``main``), none importing another.

Each parses its composed config, calls the library and turns every :class:`cdvd.errors.UserError` into one line on
stderr and exit code 2 through :func:`cdvd.cli.common.run_cli`.
"""
