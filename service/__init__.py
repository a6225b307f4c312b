"""The I/O shell around ``detectors``: configuration, sources, API, sinks, CLI."""
