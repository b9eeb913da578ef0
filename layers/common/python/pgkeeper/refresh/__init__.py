"""The parts of the refresh job: definition files, the catalog, drift checks, repair.

`pgkeeper.jobs.refresh` puts them together; each module here knows one thing.
"""
