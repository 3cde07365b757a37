"""A local OSCAR: OSCAR's REST API and interLink's Slurm translation on this machine."""
