"""Evaluation of dense features: what MoSiC training bought."""
