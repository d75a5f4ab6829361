"""The ``marquee`` command line: one module per command group."""
