"""ipywidgets for offloading: the settings panel, a job's live view and the jobs table."""

from .jobs_table import JobsTable
from .jobview import JobView
from .panel import Panel

__all__ = ["JobView", "JobsTable", "Panel"]
