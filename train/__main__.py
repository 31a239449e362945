"""``python -m mosic.train`` / ``torchrun --nproc_per_node K -m mosic.train``: the training CLI."""

from mosic.train.cli import main

if __name__ == "__main__":
    main()
