"""Evaluation protocols: each a function (backbone, data, settings) -> dict of figures."""
