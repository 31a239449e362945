"""A workaround for CoTracker-v3's offline model failing on a batch of more than one clip.

The upstream problem (co-tracker issue #163, release 3.0): ``CoTrackerThreeOffline.forward``
builds its initial coordinates as an ``expand`` of the queries and then calls
``coords_init = coords.view(B * T, N, 2)``. For B = 1 the expanded tensor happens to be viewable;
for B > 1 it is not, and PyTorch raises "view size is not compatible with input tensor's size and
stride". The sum ``coords + delta`` keeps the same non-contiguous layout, so the same line fails
again in every refinement iteration. Upstream, batches of clips therefore never ran.

The workaround: while a batched call runs, a ``TorchFunctionMode`` (thread-local, scoped to that
call) turns a ``Tensor.view`` that fails with exactly that error into a ``reshape`` of the same
shape (a copy of the same values; the model only reads ``coords_init``, so the copy is
equivalent). Every other call, a working ``view`` included, passes through unchanged, and any other
error is raised as it was. :func:`view_bug_present` decides whether a model needs it: by the
affected line in the model's source, or, without source, by the known affected versions.

The tracker (:mod:`mosic.precompute.trackers.cotracker`) applies the mode only to batched calls of
an affected model, counts how often it rewrote a view, and, if a batched call still fails, warns
once and tracks one clip at a time from then on.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

#: package versions whose offline forward has the batch bug (used when the source is unavailable)
VIEW_BUG_VERSIONS = {"3.0", "3.0.0"}
_VIEW_BUG_LINE = re.compile(r"coords\.view\(\s*B\s*\*\s*T\s*,\s*N\s*,\s*2\s*\)")
_VIEW_ERROR = "view size is not compatible"


def view_bug_present(model: Any, package_version: str) -> bool:
    """Whether ``model``'s forward has the issue-#163 line (by its source; without source, by the
    package version)."""
    try:
        src = inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        return package_version in VIEW_BUG_VERSIONS
    return bool(_VIEW_BUG_LINE.search(src))


def view_fallback_mode():
    """A TorchFunctionMode under which ``Tensor.view`` that fails with "view size is not
    compatible" returns ``reshape`` of the same shape instead; ``mode.used`` counts those. Every
    other call is untouched."""
    import torch
    from torch.overrides import TorchFunctionMode

    class ViewFallback(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.used = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.Tensor.view:
                try:
                    return func(*args, **kwargs)
                except RuntimeError as e:
                    if _VIEW_ERROR not in str(e):
                        raise
                    self.used += 1
                    return args[0].reshape(*args[1:], **kwargs)
            return func(*args, **kwargs)

    return ViewFallback()

