"""Stage 2: the MoSiC student/teacher OT-clustering loop on cached tracks."""
