"""The parts of the GPU check (bench/gpu_check.py), one module each: ``run(ctx) -> dict`` measures
one CUDA path and reports it (``status`` ok, skipped or failed, and its figures); ``common`` holds
what several parts use (the settings, the synthetic sets, the subprocess time limit, timing).

Found through the script's folder on ``sys.path`` when ``python bench/gpu_check.py`` runs: nothing
here is installed. Torch, numpy and mosic are imported inside the functions that use them, so that
``--help`` answers without loading them."""
