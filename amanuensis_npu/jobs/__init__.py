"""Archive transcription: many files, one model, resumable, on one machine or a Ray cluster.

`inputs` turns the command line (files, directories, manifests) into a checked list of
inputs with output names that never collide; `journal` remembers what is done so a rerun
only does what is left; `outputs` writes every file atomically; `transcriber` is the one
place a file becomes a result (used locally and inside Ray actors); `runner` drives a
job, its progress bar and summary; `ray_actors` spreads the same job over Ray actors.
"""

from .runner import JobSettings, JobSummary, run_job

__all__ = ["JobSettings", "JobSummary", "run_job"]
