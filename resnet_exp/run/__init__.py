"""Running jobs: the command line's check, one job's MLflow run life, a sweep, and what the
user sees while they run."""
