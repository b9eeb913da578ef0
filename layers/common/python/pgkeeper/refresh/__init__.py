"""The parts of the refresh job: definition files, the catalog, drift checks, repair.

`pgkeeper.refresh.job` puts them together; each module here knows one thing.
"""
