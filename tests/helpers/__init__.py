"""Helpers shared by the tests: console scripts and composed configs (:mod:`helpers.cli`), small datasets and
videos made on the fly (:mod:`helpers.data`), and the reference case's weights (:mod:`helpers.reference`)."""
