"""AI engines: de-identified volumes in, findings out.

Nothing in this package touches the network, the database or the data folder; engines
receive :class:`~ai_engines.volume.SeriesVolume` objects and return
:class:`~ai_engines.findings.Findings`.
"""
