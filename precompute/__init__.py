"""Stage 1: run a frozen point tracker over each clip and write the tracks to a store."""
